"""Writes refused from a peer this node counts down, and promised refused for a while, so
that the other nodes need not doubt that peer.

A node that cannot hear a peer asks the others for a file's newest record before each read
(``doubted_reads.py``): the peer may be writing with them. A server that died and was not
taken out of the cluster kept every read of every other node asking for as long as it stayed
down (0.7x the small reads). Yet a peer that every voter counts down cannot write: a write
is acknowledged once a majority stores its record, and a node refuses the locks and records
of a peer it counts down. Each heartbeat answer promises, for a lease, to go on refusing the
peers the answering node counts down; a node all of whose voters promised so needs no doubt
of such a peer (``PeerTable.doubted``). What a voter took from the peer before it counted it
down came with the pull that belongs to the same answer.

A promise outlives the peer's return: the promising node refuses the peer's locks and
records until its last promise has run out. Its verdict on the returning peer says how long
that still is (``hold``), and the peer, serving already, holds the writes it would
coordinate until then (``verification``, ``MajorityLocking.lock``): refused, they would
fail. While a promise holds its maker refuses the peer, and a reader relies only on
promises of every voter it has: the hold is for the peer's sake. Except after a restart: a
node restarted within a lease of a promise has forgotten it and refuses nothing, so its
holds count a lease from its start (a returning peer it passes writes only after that), and
the others drop its promises at their next beat (its answer promises nothing yet).
"""
import time

from securifile.common.errors import Unavailable

from .peers import DOWN

HOLD_MAX = 60.0


class Refusals:
    """The peers whose writes this node refuses: counted down now, or promised lately."""

    def __init__(self, status, lease, clock=time.monotonic):
        self.status = status  # name -> its status in this node's view
        self.lease = lease
        self.clock = clock
        self._until = {}  # peer -> when the last promise about it runs out
        self._started = clock()
        self._writes_after = 0.0  # a judge's hold on the writes this node coordinates

    def promise(self, names):
        """Promise to refuse ``names`` (counted down now) for the lease: the heartbeat
        answer's ``refusing``, None when there is nothing to promise."""
        if not names or self.lease <= 0:
            return None
        until = self.clock() + self.lease
        for name in names:
            self._until[name] = until
        return {"peers": sorted(names), "for": self.lease}

    def left(self, name):
        """Seconds until the last promise about ``name`` runs out (0: none holds)."""
        return max(0.0, self._until.get(name, 0.0) - self.clock())

    def hold_for(self, name):
        """Seconds ``name`` must hold the writes it coordinates when this node passes it:
        until this node's promises about it run out, and those a process before this one
        may have made (forgotten with it): one lease from this start."""
        return max(self.left(name), self._started + self.lease - self.clock())

    def hold_writes(self, seconds):
        """A judge that passed this node still refuses its writes for ``seconds`` (at most
        a minute: a judge's promise lasts a few heartbeats)."""
        self._writes_after = max(self._writes_after, self.clock() + min(seconds, HOLD_MAX))

    def writes_held(self):
        """Seconds before this node may coordinate a write (0: now)."""
        return max(0.0, self._writes_after - self.clock())

    def refuses(self, name):
        return self.status(name) == DOWN or self.left(name) > 0

    def check(self, name, what):
        """Unavailable (503 ``counted_down``) for ``what`` from a refused peer."""
        if self.refuses(name):
            raise Unavailable(
                f"{name} is counted down here (or was, {self.left(name):.1f} s ago at most): "
                f"its {what} are refused until it has been verified",
                code="counted_down", headers={"Retry-After": "1"})
