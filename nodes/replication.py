"""Copies of a new version and the record that names them: the end of an upload on the
node that coordinates it, once its own copy is committed under the file's lock.

A streamed body reached its replicas through the pipeline (``pipeline.py``); what did not
is copied from disk, a new file's failed replica replaced by a spare, and the record
published after (``finish_upload``). A small body kept in memory goes to each replica with
the record itself, one round instead of two (``finish_small_upload``).

A mixin of ``StorageNode``, which provides ``name``, ``client``, ``urls``, ``locations``,
``store``, ``rng``, ``call_timeout``, ``counter``, ``record_copy``, ``publish``, ``_apply_own``,
``_voters``, ``_enough``, ``check_held``, ``release`` and ``placeable_peers``.
"""
import asyncio
import copy
import logging
import time

from .locationmap import Replica
from .observed import observed
from .peerclient import PeerError
from .placement import place_replicas

log = logging.getLogger("securifile.storage")


class Replication:
    """Finishing an upload: its copies and its record (mixed into StorageNode)."""

    async def finish_upload(self, ticket, digest, size, plan, piped=None, before_publish=None,
                            sums=None):
        """After the local commit: copy to replicas, publish the record; (record, confirmed).

        ``plan``: the new record and its replicas, chosen under the lock (upload.py).
        ``piped``: {slot: server} of the replicas of ``plan`` that already stored the body
        through the pipeline; the others are copied from disk as before (a fresh file's
        failed replica is replaced by a spare, an existing holder that missed it is stale).
        ``confirmed`` is False when no majority stored the record: the change may or may not
        last, and the client is told so. ``before_publish`` is awaited once the copies are
        made (a caller renewing the lock meanwhile stops there). ``sums``: the read
        checksums of the local copy (``chunksums``), when its writer took them.
        """
        fp, existing = ticket.fp, ticket.existing
        loc, fresh = plan.loc, plan.fresh
        loc.digest, loc.size, loc.modified = digest, size, time.time()
        self.record_copy(fp, loc.version, digest, size, sums)
        confirmed = await self._replicate(fp, loc, plan.targets, fresh, piped)
        self._name_holders(loc, existing, fresh, confirmed)
        if before_publish is not None:
            await before_publish()
        self.check_held(ticket)
        return loc, await self.publish([loc], ticket)

    def _name_holders(self, loc, existing, fresh, confirmed):
        """The new record's holders: a fresh file's origin is this node and its replicas the
        ``confirmed`` ones in order; an existing file's holders keep their places, and those
        that missed this version are stale until a running holder brings them up to date
        (the repair loop, or the challenge)."""
        if fresh:
            loc.origin = self.name
            loc.replicas = [Replica(s, i) for i, s in enumerate(confirmed, start=1)]
        else:
            loc.replicas = list(existing.replicas)
            current = set(confirmed) | {self.name}
            loc.stale = [h for h in existing.holders if h not in current]

    async def finish_small_upload(self, ticket, digest, size, plan, body, sums=None):
        """A small upload's copies and its record in one round once the origin's copy is
        committed; (record, confirmed) as ``finish_upload``.

        Each replica of the plan gets the body with the record that names it, stores the
        copy, then applies the record and gives the lock back; the other peers get the
        record alone. Three rounds after the body (lock, copies, record) become two. When a
        replica does not confirm, the record went out naming a holder without the copy: a
        second record follows, with the stamp the lock reserved after the ticket's
        (``LockTable.reserve``), so it orders after the first everywhere and before any
        later change's, and it names the copies that were made (a fresh file's replicas, an
        existing file's missed holders stale), as ``finish_upload`` would have.
        """
        fp, existing = ticket.fp, ticket.existing
        loc, fresh = plan.loc, plan.fresh
        loc.digest, loc.size, loc.modified = digest, size, time.time()
        self.record_copy(fp, loc.version, digest, size, sums)
        self._name_holders(loc, existing, fresh, plan.targets)
        self.check_held(ticket)
        confirmed, published = await self._copy_and_publish(fp, loc, plan.targets, body, ticket)
        if len(confirmed) == len(plan.targets):
            return loc, published
        log.warning("small copy of %s made on %d of %d replicas: its record corrected",
                    fp, len(confirmed), len(plan.targets))
        amended = copy.deepcopy(loc)
        self._name_holders(amended, existing, fresh, confirmed)
        amended.stamp = ticket.stamp + 1
        amended.modified = max(time.time(), loc.modified + 1e-6)
        return amended, await self.publish([amended], ticket)

    @observed
    async def _copy_and_publish(self, fp, loc, wanted, body, ticket):
        """Apply ``loc`` here, send it with the copy to each of ``wanted`` and alone to the
        other peers, in one round; (the wanted that stored the copy and took the record, in
        order; whether a majority, this node included, stores the record). The lock goes
        back on every peer that took the record (the others in the background)."""
        before = self.locations.seq
        numbered = self.counter.take([loc])
        self._apply_own(loc)
        seq = (before, self.locations.seq)  # as publish(): a peer in step pulls none of it
        record = loc.to_json()
        publish = {"record": record, "token": ticket.token, "seq": list(seq),
                   "numbered": list(numbered)}
        release = [{"owner": fp.owner, "path": fp.rel, "token": ticket.token}]
        peers = self._voters()

        async def send(p):
            try:
                if p in wanted:
                    await self.client.send_copy_bytes(self.urls[p], fp, body, loc, publish)
                else:
                    await self.client.push_locations(self.urls[p], [record], release,
                                                     timeout=self.call_timeout, seq=seq,
                                                     numbered=numbered)
                return True
            except PeerError as e:
                log.warning("%s of %s to %s failed: %s", "copy and record" if p in wanted
                            else "record", fp, p, e)
                return False

        acked = dict(zip(peers, await asyncio.gather(*(send(p) for p in peers))))
        self.release(ticket, skip={p for p, ok in acked.items() if ok})
        return [t for t in wanted if acked.get(t)], self._enough(1 + sum(acked.values()))

    @observed
    async def _replicate(self, fp, loc, wanted, fresh, piped=None):
        """Copy to each wanted server concurrently (those in ``piped`` have it already); a
        fresh file replaces a failed target."""
        disk_path = self.store.path_for(fp)
        tried = set(wanted) | {self.name}
        confirmed = {}

        async def copy_to(target, slot):
            if piped is not None:
                if slot in piped:
                    confirmed[slot] = target
                    return
                target = None  # its pipelined copy failed: a fresh file looks for a spare
            while True:
                if target is not None:
                    try:
                        await self.client.send_copy(self.urls[target], fp, disk_path, loc)
                        confirmed[slot] = target
                        return
                    except PeerError as e:
                        log.warning("replica copy of %s to %s failed: %s", fp, target, e)
                if not fresh:
                    return
                spare = [p for p in self.placeable_peers() if p not in tried]
                if not spare:
                    return
                target = place_replicas(spare, 1, self.rng)[0]
                tried.add(target)

        await asyncio.gather(*(copy_to(t, i) for i, t in enumerate(wanted)))
        return [confirmed[i] for i in sorted(confirmed)]
