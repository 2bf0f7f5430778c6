"""Write locks on files, held on every running node for the length of an upload.

Each lock has a lease that the coordinating node renews while the upload runs; when the
holder dies the lease runs out and the file is free again, so a crashed upload never keeps
a file locked. The token tells the holder's own renewals and releases from other writers.
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

    def held(self, fp):
        lock = self._locks.get(fp)
        if lock is not None and lock.expires <= self.clock():
            del self._locks[fp]
            return None
        return lock

    def acquire(self, fp, holder, node, token, lease):
        """Take or renew the lock; Locked (423) if another token holds it."""
        lock = self.held(fp)
        if lock is not None and lock.token != token:
            raise Locked(f"{fp.full} is being modified by {lock.holder} (through {lock.node})",
                         holder=lock.holder, node=lock.node)
        self._locks[fp] = Lock(holder, node, token, self.clock() + lease)

    def release(self, fp, token):
        lock = self._locks.get(fp)
        if lock is not None and lock.token == token:
            del self._locks[fp]

    def check(self, fp):
        """Locked (423) if anyone holds ``fp``: a writer elsewhere is refused at once."""
        lock = self.held(fp)
        if lock is not None:
            raise Locked(f"{fp.full} is being modified by {lock.holder} (through {lock.node})",
                         holder=lock.holder, node=lock.node)
