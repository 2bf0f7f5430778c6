"""The heartbeat loop: ping every peer each interval, count misses, pull missed locations.

An acknowledgement carries the peer's location-map sequence number; when it has moved past
what this node last pulled from that peer, the new records are pulled. So a node that was
down, or missed a broadcast, catches up within a heartbeat of the peer answering. A pull
names the records this node was pushed (``pushed``, ``nodes/pushed.py``): the peer sends
only their sequence numbers, not the records again.
"""
import asyncio
import logging

from tornado.ioloop import PeriodicCallback

from .peerclient import PeerError
from .peers import DOWN

log = logging.getLogger("securifile.heartbeat")
BEAT_TIMEOUT = 0.8  # of the interval


class HeartbeatLoop:
    def __init__(self, peers, peer_client, urls, interval, sync_locations, on_return=None,
                 cursors=None, quorum=None, membership=None, pushed=None):
        self.peers = peers
        self.client = peer_client
        self.urls = urls
        self.interval = interval
        self.sync_locations = sync_locations
        self.on_return = on_return or (lambda name: None)  # a peer to challenge
        self._in_flight = set()  # peers with a heartbeat under way
        self._pulling = set()  # peers whose records are being pulled (one pull at a time)
        self._tasks = set()
        # peer -> last sequence number pulled from it; kept in ``cursors`` (the location
        # map) so that a restart does not pull every record of every peer again.
        self._cursors = cursors
        self._pulled = dict(cursors.pull_cursors()) if cursors is not None else {}
        self._saved = dict(self._pulled)  # what ``cursors`` holds (pushes advance lazily)
        self._periodic = None
        self.quorum = quorum  # told of every answer; asked to refresh once a round
        # peer -> whether this node has held the majority at every beat since it counted
        # the peer down (``_counts_down``)
        self._counted_out = {}
        self.membership = membership  # takes a newer list from an answer (gossip)
        self.pushed = pushed  # PushedSpans: what a pull may skip, and learns from a pull

    def _due(self):
        return [n for n in self.peers.names if n not in self._in_flight]

    async def run_once(self):
        """One round: a heartbeat to every peer whose previous one has finished."""
        await asyncio.gather(*(self._beat(n) for n in self._due()))
        if self.quorum is not None:
            await self.quorum.refresh()

    async def _beat(self, name):
        self._in_flight.add(name)
        sent = self.quorum.clock() if self.quorum is not None else None
        beat_sent = self.peers.clock()  # the same moment on the peer table's clock
        try:
            try:
                # Given up before the next beat is due: a hung peer (SIGSTOP) then misses one
                # beat per interval, as a dead one does, not one every other interval.
                answer = await self.client.heartbeat(self.urls[name],
                                                     timeout=self.interval * BEAT_TIMEOUT,
                                                     pulled=self._pulled.get(name, 0),
                                                     counted_down=self._counts_down(name))
            except PeerError as e:
                log.debug("heartbeat to %s missed: %s", name, e)
                self.peers.record_miss(name, sent=beat_sent)
                return
        finally:
            self._in_flight.discard(name)
        if name in self._pulling:
            # The beat that started the pull answers for the peer once its records are
            # here; this one only says the peer still answers.
            self.peers.record_alive(name)
            return
        if self.membership is not None:
            self.membership.gossip(answer.get("membership"), name)
        seq = int(answer.get("seq", 0))
        pulled = True  # every record the peer had when it answered is applied here
        if seq == self._pulled.get(name, 0) and self._saved.get(name) != seq:
            self._advance(name, seq)  # advanced by pushes: kept, once a beat at most
        elif seq != self._pulled.get(name, 0):
            # Catch up first: a returning peer is challenged on the newest records. The
            # beats go on meanwhile (a peer cut off during a long pull is seen down as
            # soon as any other), but start no second pull from the same point.
            self._pulling.add(name)
            try:
                pulled = await self._pull(name, seq)
            finally:
                self._pulling.discard(name)
            if not pulled and self.peers.status(name) == DOWN:
                return  # seen down by the beats meanwhile: this answer is stale
        returned = self.peers.record_ack(name, seq, answer.get("boot"),
                                         answer.get("status", "running"),
                                         int(answer.get("round", 0)), sent=beat_sent)
        if pulled:
            # What it took from a peer before it counted that peer down is here now.
            self.peers.note_promise(name, answer.get("refusing"), beat_sent)
        if self.quorum is not None:
            # After the pull: a majority heard means records caught up (as of ``sent``).
            self.quorum.heard(name, sent)
        if returned:
            self.on_return(name)

    def _counts_down(self, name):
        """What the beat tells ``name`` when this side wrote without it (None otherwise):
        its boot and round as this node last heard them. This node has counted it down,
        after having heard from it (a server just added, or not heard since this node
        started, was never counted, so never counted out), and held the majority at every
        beat since: a node that counted it down while cut off itself wrote nothing without
        it (told, it would be verified again for nothing after its peers had passed it; a
        CI run caught one answering 503 just then)."""
        if not self.peers.counted_out(name):
            self._counted_out.pop(name, None)
            return None
        held = self.quorum is None or self.quorum.has()
        self._counted_out[name] = self._counted_out.get(name, True) and held
        return self.peers.last_heard(name) if self._counted_out[name] else None

    async def catch_up(self, name):
        """Pull whatever ``name`` has that this node has not applied yet (a challenger
        whose map is behind the peer it judges, a listing while a peer is doubted); True
        once pulled to the end."""
        return await self._pull(name, None)

    async def _pull(self, name, seq):
        # A peer whose sequence went backwards lost its map: start again from zero.
        since = self._pulled.get(name, 0) if seq is None or seq >= self._pulled.get(name, 0) else 0
        try:
            for _ in range(10_000):  # bounded: 10 million records per round at most
                skip = {} if self.pushed is None else {"known": self.pushed.known()}
                page = await self.client.pull_locations(self.urls[name], since, **skip)
                records = page.get("records", [])
                if records:
                    # A record known here comes as its sequence number alone.
                    fresh = [r for r in records if "owner" in r]
                    if fresh:
                        self.sync_locations(fresh)
                    since = records[-1]["seq"]
                    self._advance(name, since)  # a pull cut short goes on from here
                if len(records) < page.get("limit", 1000):
                    break
            if seq is not None:
                self._advance(name, max(since, seq))
            if self.pushed is not None and page.get("own"):
                # Read to its end: every record the peer numbered this run is here now.
                self.pushed.pulled(name, page["own"])
            return True
        except PeerError as e:
            log.warning("pulling locations from %s failed: %s", name, e)
        except Exception:
            log.exception("applying locations from %s failed", name)
        return False

    def note_pushed(self, name, before, after):
        """``name`` pushed records (now applied here) that took its map from sequence
        ``before`` to ``after``: when this node had pulled exactly up to ``before``, it has
        everything up to ``after`` and the next beat pulls nothing. Each small upload's
        record was otherwise pulled again by every peer within a second of its push."""
        if name in self.urls and name not in self._in_flight and name not in self._pulling \
                and self._pulled.get(name, 0) == before < after:
            self._pulled[name] = after  # saved by the next beat (a restart pulls them again)

    def _advance(self, name, seq):
        self._pulled[name] = seq
        if self._cursors is not None:
            self._cursors.save_pull_cursor(name, seq)
            self._saved[name] = seq

    def start(self):
        self._periodic = PeriodicCallback(self._tick, self.interval * 1000)
        self._periodic.start()

    def _tick(self):
        # Each peer on its own task: one hung peer must not delay the beats to the others.
        beats = [self._beat(name) for name in self._due()]
        if self.quorum is not None:
            beats.append(self.quorum.refresh())
        for beat in beats:
            task = asyncio.ensure_future(beat)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_log_failure)

    def stop(self):
        if self._periodic:
            self._periodic.stop()
        for task in list(self._tasks):
            task.cancel()


def _log_failure(task):
    if not task.cancelled() and task.exception() is not None:
        log.error("heartbeat failed", exc_info=task.exception())
