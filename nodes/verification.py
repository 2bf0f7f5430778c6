"""Running a challenge against a returning peer, and bringing its stale copies up to date.

One challenge per return: the files this node shares with the peer go out in batches with a
deadline; a copy that is only older (it missed a modification while down) is sent afresh,
after which the peer's name leaves the file's stale list everywhere. Any missing, corrupt or
replayed copy, or a challenge that does not complete in time, fails the peer.
"""
import asyncio
import logging
import time

from .challenge import BATCH, ChallengeResult, check_answer, new_challenge
from .peerclient import PeerError

log = logging.getLogger("securifile.verification")
IN_FLIGHT = 2  # challenge batches sent to a peer at a time


class Verifier:
    def __init__(self, node, timeout=60.0, rng=None):
        self.node = node
        self.timeout = timeout
        self.rng = rng or node.rng
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
        node = self.node
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(self._challenge(peer), self.timeout)
            if result.stale and result.passed:
                await self._repair(peer, result.stale)
            passed, detail = result.passed, result.summary()
        except asyncio.TimeoutError:
            passed, detail = False, f"challenge did not complete within {self.timeout:.0f} s"
        except PeerError as e:
            passed, detail = False, f"challenge interrupted: {e}"
        except Exception as e:  # a bug must not leave the peer verifying for ever
            log.exception("challenge of %s failed", peer)
            passed, detail = False, f"challenge error: {e!r}"
        detail = f"{detail} ({time.monotonic() - started:.2f} s)"
        self.log_challenge(peer, "passed" if passed else "failed", detail)
        node.peers.challenge_done(peer, passed, detail)
        try:
            await node.client.send_verdict(node.urls[peer], passed, detail)
        except PeerError as e:
            log.warning("could not tell %s its verdict: %s", peer, e)
        return passed

    async def _challenge(self, peer):
        node = self.node
        locs = await asyncio.to_thread(self.files_to_check, peer)
        self.log_challenge(peer, "sent", f"{len(locs)} files")
        by_key = {(loc.owner, loc.path): loc for loc in locs}
        result = ChallengeResult()
        batches = iter([locs[i:i + BATCH] for i in range(0, max(len(locs), 1), BATCH)])

        async def send_batches():
            # IN_FLIGHT senders: the peer finds the next batch waiting when it finishes one,
            # and each answer is checked (a read of every file here) while it answers another.
            for batch in batches:
                challenge = new_challenge(node.name, batch, self.rng)
                answer = await node.client.challenge(node.urls[peer], challenge, self.timeout)
                await asyncio.to_thread(check_answer, node.store, by_key, challenge, answer,
                                        result)

        senders = [asyncio.ensure_future(send_batches()) for _ in range(IN_FLIGHT)]
        try:
            await asyncio.gather(*senders)
        finally:
            for task in senders:
                task.cancel()
        return result

    async def _repair(self, peer, keys):
        """Send current copies of the files ``peer`` holds an older version of."""
        node = self.node
        repaired = []
        for owner, path in keys:
            loc = node.locations.get_key(owner, path)
            if loc is None:
                continue
            await node.client.send_copy(node.urls[peer], loc.file_path,
                                        node.store.path_for(loc.file_path), loc)
            repaired.append(loc)
        await node.mark_fresh(peer, repaired)
        log.warning("brought %d stale copies on %s up to date", len(repaired), peer)
