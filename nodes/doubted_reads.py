"""Reads while a peer may be writing without this node: the file's newest record is asked
of the peers it does not see down before the read is routed.

A link broken between two servers that both still hear a third leaves each of them its
majority through the third: each writes without the other (it counts the other down), and
the other has the new record only once its next pull from the third brings it, up to a
heartbeat later. Until then it answered 404 for a file just acknowledged, or served the
version before. A write is acknowledged once a majority stores its record; the peers this
node does not see down make a majority with it (it serves only while they do), so one of
them has that record, and the newest of their answers is applied here before the read goes
on (a quorum read: R + W > N). Only while a peer is doubted (``PeerTable.doubted``): with
every peer heard, each writer pushes its record to this node before it answers.

A folder's listing pulls instead (``list_newest``): the records each of those peers has that
this node has not applied yet, whatever file they are of.

A mixin of ``StorageNode``, which provides ``peers``, ``client``, ``urls``,
``call_timeout``, ``doubt_window``, ``catch_up``, ``_voters``, ``_enough`` and
``apply_locations``.
"""
import asyncio
import logging

from securifile.common.errors import Unavailable

from .observed import observed
from .peerclient import PeerError

log = logging.getLogger("securifile.storage")


class DoubtedReads:
    """The newest records before a file is read or a folder listed (mixed into StorageNode)."""

    @observed
    async def read_newest(self, fp):
        """While a peer is doubted, apply the newest record of ``fp`` that the peers not
        seen down hold; the number of them asked (0: none doubted, nothing asked).
        Unavailable (503 ``no_quorum``) when fewer than a majority, this node included,
        answered: the newest record may be on those that did not."""
        async def ask(peer):
            try:
                return True, await self.client.record_of(self.urls[peer], fp,
                                                         timeout=self.call_timeout)
            except PeerError as e:
                log.info("record of %s from %s: %s", fp, peer, e)
                return False, None

        answers = await self._ask_voters(ask, f"{fp.full}'s newest record")
        records = [record for ok, record in answers if ok and record]
        if records:
            self.apply_locations(records)
        return len(answers)

    @observed
    async def list_newest(self, fp):
        """While a peer is doubted, pull from every peer not seen down what it has that
        this node has not applied yet (``HeartbeatLoop.catch_up``: the records since the
        last pull, those pushed here as their numbers alone), before the folder ``fp`` is
        listed; the number of peers asked. Unavailable as ``read_newest``."""
        async def pull(peer):
            try:
                return await asyncio.wait_for(self.catch_up(peer), self.call_timeout), None
            except TimeoutError:
                log.info("records from %s before listing %s: no answer in time", peer, fp)
                return False, None

        return len(await self._ask_voters(pull, f"the newest records under {fp.full}"))

    async def _ask_voters(self, ask, what):
        """While a peer is doubted, ``ask(peer)`` of every peer not seen down (one that
        missed a beat lately but answers again may be the very writer doubted), each
        answering (answered, value): the answers, none when no peer is doubted."""
        doubted = self.peers.doubted(self.doubt_window)
        if not doubted:
            return []
        answers = await asyncio.gather(*(ask(p) for p in self._voters()))
        answered = sum(ok for ok, _ in answers)
        if not self._enough(1 + answered):
            raise Unavailable(
                f"only {1 + answered} of {len(self.peers.names) + 1} servers answered for "
                f"{what} while {', '.join(sorted(doubted))} may be writing without this one "
                "(seen down, or a heartbeat missed lately)",
                code="no_quorum", headers={"Retry-After": "1"})
        return answers
