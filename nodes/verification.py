"""Running a challenge against a returning peer, and bringing its stale copies up to date.

One challenge per return: the files this node shares with the peer go out in batches with a
deadline; a copy that is only older (it missed a modification while down) is sent afresh,
after which the peer's name leaves the file's stale list everywhere. Any missing, corrupt or
replayed copy fails the peer.

A copy whose ranges differ from this node's own is judged only once this node's own copy
has hashed to its record (a commit killed between its rename and its record leaves other
bytes under the old record here; such a copy is quarantined and repaired instead).

A file the peer claims at a newer version, or refuses to answer for, is judged neither way:
this node pulls the peer's location changes and asks about those files again, a few rounds
at most. Still undecided, the peer stays verifying and is challenged again at a later
heartbeat. A challenge that times out while the peer still answers a heartbeat fails it; one
broken off because the peer became unreachable is abandoned (the peer counts as down and
is challenged when it answers), so that a partition never leaves a server failed.
"""
import asyncio
import logging
import random
import time

from .challenge import (BATCH, CHANGING, CORRUPT, MISSING, REPLAYED, ChallengeResult,
                        check_answer, new_challenge)
from .peerclient import PeerError
from .quarantine import GOOD, check_own_copy, write_under_way

log = logging.getLogger("securifile.verification")
IN_FLIGHT = 2  # challenge batches sent to a peer at a time
ROUNDS = 3  # catch-ups, each followed by a challenge of the files still undecided
PROBE_TIMEOUT = 5.0  # the heartbeat that tells a stuck peer from an unreachable one

PASSED, FAILED, UNDECIDED, ABANDONED = "passed", "failed", "undecided", "abandoned"


async def _no_catch_up(peer):
    return None


class Verifier:
    def __init__(self, node, timeout=60.0, rng=None, catch_up=None, retry_delay=0.0):
        self.node = node
        self.timeout = timeout
        # Ranges the peer must not guess: the kernel's generator unless a test brings its own.
        self.rng = rng or random.SystemRandom()
        self.catch_up = catch_up or _no_catch_up  # coroutine: pull the peer's location changes
        self.retry_delay = retry_delay  # between rounds: time for the peer to pull ours
        self.probe_timeout = PROBE_TIMEOUT
        self.running = {}  # peer -> asyncio.Task
        self.log_challenge = lambda peer, what, detail: None  # the audit log, when set

    def start(self, peer):
        """Challenge ``peer`` in the background (once at a time per peer)."""
        if peer in self.running and not self.running[peer].done():
            return self.running[peer]
        task = asyncio.ensure_future(self.run(peer))
        self.running[peer] = task
        return task

    def files_to_check(self, peer):
        """Files both hold where this node's copy is current (so it can judge the peer's)."""
        return self.node.locations.checkable(self.node.name, peer)

    async def run(self, peer):
        """Challenge ``peer`` and act on the outcome; returns PASSED, FAILED, UNDECIDED or
        ABANDONED."""
        node = self.node
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(self._challenge(peer), self.timeout)
            if result.stale and not result.failed:
                await self._repair(peer, result.stale)
            outcome = PASSED if result.passed else FAILED if result.failed else UNDECIDED
            detail = result.summary()
        except asyncio.TimeoutError:
            outcome, detail = await self._timed_out(
                peer, f"challenge did not complete within {self.timeout:.0f} s")
        except PeerError as e:
            if e.unreachable:
                outcome, detail = ABANDONED, f"challenge broken off, peer unreachable: {e}"
            elif e.timed_out:
                outcome, detail = await self._timed_out(peer, f"challenge timed out: {e}")
            else:
                outcome, detail = FAILED, f"challenge refused: {e}"
        except Exception as e:  # a bug must not leave the peer verifying for ever
            log.exception("challenge of %s failed", peer)
            outcome, detail = FAILED, f"challenge error: {e!r}"
        detail = f"{detail} ({time.monotonic() - started:.2f} s)"
        self.log_challenge(peer, outcome, detail)
        if outcome == UNDECIDED:
            node.peers.challenge_undecided(peer, detail)
        elif outcome == ABANDONED:
            node.peers.challenge_abandoned(peer, detail)
        else:
            node.peers.challenge_done(peer, outcome == PASSED, detail)
            # This node still refuses the peer's locks and records while its promise to do
            # so holds (nodes/refusals.py): the peer serves, and holds its writes till then.
            hold = node.refusals.hold_for(peer) if outcome == PASSED else 0.0
            try:
                await node.client.send_verdict(node.urls[peer], outcome == PASSED, detail,
                                               hold=hold)
            except PeerError as e:
                log.warning("could not tell %s its verdict: %s", peer, e)
                if outcome == PASSED:  # challenged again at its next answer (failed stays)
                    node.peers.verdict_lost(peer)
        return outcome

    async def _timed_out(self, peer, detail):
        """A peer that answers a heartbeat but not the challenge fails; one that answers
        nothing is unreachable (down, or cut off), and the challenge is abandoned."""
        try:
            await self.node.client.heartbeat(self.node.urls[peer], self.probe_timeout)
        except PeerError as e:
            return ABANDONED, f"{detail}; no heartbeat answered either ({e})"
        return FAILED, f"{detail} while the peer answers heartbeats"

    async def _challenge(self, peer):
        locs = await asyncio.to_thread(self.files_to_check, peer)
        self.log_challenge(peer, "sent", f"{len(locs)} files")
        result = ChallengeResult()
        await self._check(peer, locs, result, empty_too=True)
        for _ in range(ROUNDS):
            undecided = result.inconclusive
            if not undecided or result.failed:
                break
            await self.catch_up(peer)
            if self.retry_delay:
                await asyncio.sleep(self.retry_delay)
            current = {(loc.owner, loc.path): loc
                       for loc in await asyncio.to_thread(self.files_to_check, peer)}
            for key in undecided:  # judged again below, or no longer this node's to judge
                del result.outcomes[key]
            await self._check(peer, [current[k] for k in undecided if k in current], result)
        return result

    async def _check(self, peer, locs, result, empty_too=False):
        """Challenge ``peer`` on ``locs`` in batches; each file's outcome goes into ``result``.

        ``empty_too``: with no file to check, still send an empty challenge, so that a pass
        means the peer answered one.
        """
        node = self.node
        by_key = {(loc.owner, loc.path): loc for loc in locs}
        count = max(len(locs), 1) if empty_too else len(locs)
        batches = iter([locs[i:i + BATCH] for i in range(0, count, BATCH)])

        async def send_batches():
            # IN_FLIGHT senders: the peer finds the next batch waiting when it finishes one,
            # and each answer is checked (a read of every file here) while it answers another.
            for batch in batches:
                challenge = new_challenge(node.name, batch, self.rng)
                answer = await node.client.challenge(node.urls[peer], challenge, self.timeout)
                await asyncio.to_thread(check_answer, node.store, by_key, challenge, answer,
                                        result)
                self._unsettled_to_changing(batch, result)
                await self._own_copy_first(peer, batch, result)

        senders = [asyncio.ensure_future(send_batches()) for _ in range(IN_FLIGHT)]
        try:
            await asyncio.gather(*senders)
        finally:
            for task in senders:
                task.cancel()

    def _unsettled_to_changing(self, batch, result):
        """A bad outcome for a file that a write touched meanwhile (its lock is held here, its
        copy is being renamed in or removed, or its record moved on) proves nothing: the copies compared may be of two moments.
        Such files are judged again, after the write, instead of failing the peer."""
        node = self.node
        for loc in batch:
            key = (loc.owner, loc.path)
            if result.outcomes.get(key) not in (MISSING, CORRUPT, REPLAYED):
                continue
            fp = loc.file_path
            now = node.locations.get(fp)
            if (write_under_way(node, fp) or now is None
                    or (now.version, now.digest) != (loc.version, loc.digest)
                    or node.locations.copy_version(fp) != loc.version):
                result.outcomes[key] = CHANGING

    async def _own_copy_first(self, peer, batch, result):
        """Ranges of the peer's copy unlike this node's own copy: the bad one may be this
        node's. A commit killed between its rename and its record leaves other bytes under
        the old record (seen in a nemesis run: two nodes killed at once, then the one
        restarted judged the other "1 replayed" with nothing corrupted). This node's own
        copy is hashed first; one unlike its record is quarantined and published lost (the
        others repair it), and the peer's copy is no longer this node's to judge. Nor is it
        while this node's own copy is unsettled (a write of it under way here, or the copy
        replaced since): the peer fails only against a copy found good."""
        for loc in batch:
            key = (loc.owner, loc.path)
            if result.outcomes.get(key) != REPLAYED:
                continue
            own = await check_own_copy(self.node, loc.file_path,
                                       f"a challenge of {peer} found {loc.file_path.full} "
                                       "unlike this node's copy")
            if own != GOOD:
                result.outcomes[key] = CHANGING

    async def _repair(self, peer, keys):
        """Send current copies of the files ``peer`` holds an older version of."""
        node = self.node
        repaired = []
        for owner, path in keys:
            loc = node.locations.get_key(owner, path)
            if loc is None:
                continue
            try:
                await node.client.send_copy(node.urls[peer], loc.file_path,
                                            node.store.path_for(loc.file_path), loc)
            except PeerError as e:
                if e.status is None:
                    raise  # the peer went away: the challenge is abandoned
                # The peer answered, but refused the copy: the file changed under the
                # transfer (a write in between). The repair loop sends it again later.
                log.warning("copy of %s to %s refused (left to the repair loop): %s",
                            loc.file_path, peer, e)
                continue
            except OSError as e:  # the file itself went (deleted or replaced meanwhile)
                log.warning("copy of %s to %s not sent: %s", loc.file_path, peer, e)
                continue
            repaired.append(loc)
        await node.mark_fresh(peer, repaired)
        log.warning("brought %d stale copies on %s up to date", len(repaired), peer)
