"""Reads while a peer may be writing without this node: the file's newest record is asked
of the peers this node still hears before the read is routed.

A link broken between two servers that both still hear a third leaves each of them its
majority through the third: each writes without the other (it counts the other down), and
the other has the new record only once its next pull from the third brings it, up to a
heartbeat later. Until then it answered 404 for a file just acknowledged, or served the
version before. A write is acknowledged once a majority stores its record; the peers this
node hears make a majority with it, so one of them has that record, and the newest of their
answers is applied here before the read goes on (a quorum read: R + W > N). Only while a
peer is doubted (``PeerTable.doubted``): with every peer heard, each writer pushes its
record to this node before it answers.

A mixin of ``StorageNode``, which provides ``peers``, ``client``, ``urls``,
``call_timeout``, ``doubt_window``, ``_voters``, ``_enough`` and ``apply_locations``.
"""
import asyncio
import logging

from securifile.common.errors import Unavailable

from .observed import observed
from .peerclient import PeerError

log = logging.getLogger("securifile.storage")


class DoubtedReads:
    """The newest record of a file before it is read (mixed into StorageNode)."""

    @observed
    async def read_newest(self, fp):
        """While a peer is doubted, apply the newest record of ``fp`` that the peers not
        seen down hold; the number of them asked (0: none doubted, nothing asked).
        Unavailable (503 ``no_quorum``) when fewer than a majority, this node included,
        answered: the newest record may be on those that did not."""
        doubted = self.peers.doubted(self.doubt_window)
        if not doubted:
            return 0
        # Every peer not seen down: one that missed a beat lately but answers again may
        # be the very writer this node doubts.
        asked = self._voters()

        async def ask(peer):
            try:
                return True, await self.client.record_of(self.urls[peer], fp,
                                                         timeout=self.call_timeout)
            except PeerError as e:
                log.info("record of %s from %s: %s", fp, peer, e)
                return False, None

        answers = await asyncio.gather(*(ask(p) for p in asked))
        answered = sum(ok for ok, _ in answers)
        if not self._enough(1 + answered):
            raise Unavailable(
                f"{fp.full}: only {1 + answered} of {len(self.peers.names) + 1} servers "
                f"answered for its newest record while {', '.join(sorted(doubted))} may be "
                "writing without this one (seen down, or a heartbeat missed lately)",
                code="no_quorum", headers={"Retry-After": "1"})
        records = [record for ok, record in answers if ok and record]
        if records:
            self.apply_locations(records)
        return len(asked)
