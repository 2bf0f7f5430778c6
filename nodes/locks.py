"""Write locks on files, taken from a majority of the servers for the length of a change.

Each lock has a lease that the coordinating node renews while the upload runs; when the
holder dies the lease runs out (or the holder is seen down) and the file is free again, so
a crashed upload never keeps a file locked. The token tells the holder's own renewals and
releases from other writers.

Granting a lock also reserves a stamp (see ``Location.stamp``): the next stamp this node
will accept for the path. Reservations outlive the lock: a coordinator cut off by a
partition, whose lock was released when it was seen down, cannot later publish a record
that ties with, or beats, the one a new lock holder publishes.
"""
import time
from dataclasses import dataclass

from securifile.common.errors import Locked


@dataclass
class Lock:
    holder: str  # the user writing
    node: str  # the node coordinating the write
    token: str
    expires: float


class LockTable:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._locks = {}
        self._reserved = {}  # fp -> the highest stamp reserved by a grant

    def held(self, fp):
        lock = self._locks.get(fp)
        if lock is not None and lock.expires <= self.clock():
            del self._locks[fp]
            return None
        return lock

    def busy(self, fp):
        """Whether an unexpired lock guards ``fp``: read only, so a thread may ask (``held``
        drops an expired lock, which only the event loop may do)."""
        lock = self._locks.get(fp)
        return lock is not None and lock.expires > self.clock()

    def held_count(self):
        """Unexpired locks, for the metrics."""
        now = self.clock()
        return sum(1 for lock in self._locks.values() if lock.expires > now)

    def acquire(self, fp, holder, node, token, lease):
        """Take or renew the lock; Locked (423) if another token holds it."""
        lock = self.held(fp)
        if lock is not None and lock.token != token:
            raise Locked(f"{fp.full} is being modified by {lock.holder} (through {lock.node})",
                         holder=lock.holder, node=lock.node)
        self._locks[fp] = Lock(holder, node, token, self.clock() + lease)

    def reserve(self, fp, known):
        """A stamp above ``known`` and above every stamp reserved here before; kept with the
        one after it, which a change may need for a second record (a small upload whose
        record went out with its copies, corrected when a copy failed: ``storage``)."""
        stamp = max(known, self._reserved.get(fp, 0)) + 1
        self._reserved[fp] = stamp + 1
        return stamp

    def raise_reservation(self, fp, stamp):
        self._reserved[fp] = max(stamp + 1, self._reserved.get(fp, 0))

    def release(self, fp, token):
        lock = self._locks.get(fp)
        if lock is not None and lock.token == token:
            del self._locks[fp]

    def release_node(self, node):
        """Drop every lock coordinated by ``node`` (seen down or restarted); how many."""
        gone = [fp for fp, lock in self._locks.items() if lock.node == node]
        for fp in gone:
            del self._locks[fp]
        return len(gone)

    def check(self, fp):
        """Locked (423) if anyone holds ``fp``: a writer elsewhere is refused at once."""
        lock = self.held(fp)
        if lock is not None:
            raise Locked(f"{fp.full} is being modified by {lock.holder} (through {lock.node})",
                         holder=lock.holder, node=lock.node)
