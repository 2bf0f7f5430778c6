"""Putting copies back: the repair loop of one node.

For each file this node serves (it is the first running holder with a current copy), it
brings the record back to an origin and ``replicas`` current replicas:
- a running holder marked stale (it missed a version, or lost its copy to rot) is sent the
  current copy and published as current again;
- a holder down or failed for longer than ``repair_after`` is replaced: the copy goes to a
  running server that holds none, appended after the other holders (priorities keep their
  order; a lost origin's place goes to the first replica). With no server to take it, the
  lost holder is marked stale, so that the record (and the admin database) say the file is
  under-replicated;
- a file with fewer current copies than it should have (a replica failed during the upload,
  or there was no server to take one) gets new replicas as soon as servers can take them;
- a holder being drained (retired by the administrator) is replaced the same way, but only
  once its replacement holds the copy: the file keeps its copies on the others throughout.
A holder that comes back after it was replaced drops its copy when it learns the record.

Crash leftovers are settled here too, once no lock guards the file and the copy is older
than a grace period: a copy no live record names this node a holder of is removed; a copy of
a newer version than its record (a coordinator died after copying a modification, before
publishing it) is adopted: published as the current version, the other holders stale until
they are sent it. The old bytes were replaced already, so adopting is what keeps the file
readable; the write was never acknowledged, so either outcome is allowed.

Like HDFS's re-replication, it runs at a bounded rate: ``batch`` files per round.
"""
import asyncio
import logging
import time

from securifile.common.errors import Locked, Unavailable

from .locationmap import Replica
from .peerclient import PeerError
from .peers import DOWN, FAILED, RUNNING
from .placement import copies_wanted, place_replicas, serving_holder
from .rounds import PeriodicRounds

log = logging.getLogger("securifile.repair")


class RepairLoop(PeriodicRounds):
    round_name = "repair"

    def __init__(self, node, repair_after, interval, batch, clock=time.time, grace=60.0):
        self.node = node
        self.repair_after = repair_after
        self.interval = interval
        self.batch = batch
        self.clock = clock
        self.repaired = 0  # record changes made
        self.failures = 0
        self.grace = grace  # a copy younger than this may still be waiting for its record
        self.removed = 0
        self.adopted = 0

    def lost_holders(self):
        """Peers down or failed for longer than ``repair_after``."""
        peers, now = self.node.peers, self.clock()
        return {p for p in peers.names if peers.status(p) in (DOWN, FAILED)
                and now - peers.since(p) >= self.repair_after}

    def _mine(self, loc):
        node = self.node
        return serving_holder(loc, lambda n: node._can_serve(loc, n)) == node.name

    async def run_once(self):
        """One round: up to ``batch`` files repaired; how many records changed."""
        node = self.node
        if node.peers.self_status != RUNNING or (node.quorum is not None and not node.quorum.has()):
            return 0
        lost = self.lost_holders()
        running = set(node.peers.running_peers())
        retiring = set(node.draining)
        candidates = await asyncio.to_thread(
            node.locations.needing_repair, copies_wanted(node.replicas), lost | retiring, running,
            self.batch * 20)
        changed = 0
        for loc in [c for c in candidates if self._mine(c)][:self.batch]:
            try:
                if await self.repair(loc, lost, running, retiring):
                    changed += 1
            except (Locked, Unavailable) as e:  # a writer has it, or no majority: next round
                log.info("repair of %s put off: %s", loc.file_path, e)
            except Exception:
                self.failures += 1
                log.exception("repair of %s failed", loc.file_path)
        self.repaired += changed
        await self.settle_leftovers()
        return changed

    def _settled(self, fp):
        """No lock on ``fp`` here and its copy older than the grace period."""
        if self.node.locks.held(fp) is not None:
            return False
        try:
            return self.clock() - self.node.store.path_for(fp).stat().st_mtime >= self.grace
        except OSError:
            return True

    async def settle_leftovers(self):
        """Remove unclaimed copies, publish lost ones as stale, adopt copies ahead of their
        record (see above)."""
        node = self.node
        unclaimed = await asyncio.to_thread(node.locations.unclaimed_copies, node.name, self.batch)
        for fp, version in unclaimed:
            if self._settled(fp):
                log.warning("removing %s (version %d): no record names this server", fp, version)
                node._drop_local(fp)
                self.removed += 1
        for fp in await asyncio.to_thread(node.locations.lost_copies, node.name, self.batch):
            if node.locks.held(fp) is None:
                await node.copy_lost(fp, "no copy here although the record names this server")
        ahead = await asyncio.to_thread(node.locations.copies_ahead, self.batch)
        for fp, version, digest, size in ahead:
            if not self._settled(fp):
                continue
            me = node.name

            def adopt(cur, version=version, digest=digest, size=size):
                if cur.version >= version or me not in cur.holders:
                    return False
                cur.version, cur.digest, cur.size = version, digest, size
                cur.stale = [h for h in cur.holders if h != me]

            try:
                if await node.amend(fp, adopt, "(repair)") is not None:
                    log.warning("adopted %s version %d: its coordinator never published it",
                                fp, version)
                    self.adopted += 1
            except (Locked, Unavailable) as e:
                log.info("adopting %s put off: %s", fp, e)

    async def repair(self, loc, lost, running, retiring=frozenset()):
        """Copy what ``loc`` lacks, then publish the new holders; True if the record changed.

        Holders in ``retiring`` (being drained) do not count as copies; each is dropped from
        the record only once a new holder has taken its copy."""
        node = self.node
        holders = loc.holders
        staying = [h for h in holders if h not in retiring]
        freshen = [h for h in loc.stale if h in running and h not in retiring]
        dead = [h for h in staying if h in lost]
        leaving = [h for h in holders if h in retiring]
        waiting = [h for h in loc.stale if h not in running and h not in lost and h in staying]
        current = [h for h in staying if h not in loc.stale and h not in lost]
        spares = [p for p in running if p not in holders and p not in retiring]
        need = copies_wanted(node.replicas) - len(current) - len(freshen) - len(waiting)
        added = place_replicas(spares, max(0, need), node.rng)
        sent = await self._send(loc, freshen + added)
        freshened = [h for h in freshen if h in sent]
        added = [h for h in added if h in sent]
        replaced = (dead + leaving)[:len(added)]
        to_mark = [h for h in dead if h not in replaced and h not in loc.stale]
        if not (freshened or added or to_mark):
            return False
        version = loc.version

        def change(cur):
            if cur.version != version:
                return False  # written meanwhile: the copies sent are of an old version
            order = [h for h in cur.holders if h not in replaced] + \
                    [h for h in added if h not in cur.holders]
            cur.origin = order[0]
            cur.replicas = [Replica(s, i) for i, s in enumerate(order[1:], start=1)]
            cur.stale = [h for h in cur.stale if h in order and h not in freshened] + \
                        [h for h in to_mark if h in order and h not in cur.stale]

        new = await node.amend(loc.file_path, change, "(repair)")
        if new is not None:
            log.warning("repaired %s: holders %s (stale %s), was %s", loc.file_path,
                        new.holders, new.stale, holders)
        return new is not None

    async def _send(self, loc, targets):
        node, fp = self.node, loc.file_path
        path = node.store.path_for(fp)

        async def one(target):
            try:
                await node.client.send_copy(node.urls[target], fp, path, loc)
                return target
            except (PeerError, OSError) as e:
                log.warning("repair copy of %s to %s failed: %s", fp, target, e)
                return None

        return {t for t in await asyncio.gather(*(one(t) for t in targets)) if t}
