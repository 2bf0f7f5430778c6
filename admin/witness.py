"""The tie-break witness: in an even split of the servers, one side at a time goes on.

A side that reaches exactly half of the servers asks for a short lease; the witness grants
it to one side until the lease runs out unrenewed, and refuses every other side meanwhile.
Any member of the granted side renews it. The nodes count their lease from before they
asked and shorten it, so the old side has stopped before the witness grants a new one.
Kept in memory: after a restart of the admin server the first side to ask wins, and the
side that held it stops within its own (shorter) lease if it is refused.
"""
import time

MAX_LEASE = 60.0


class Witness:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.side = None
        self.until = 0.0

    def ask(self, asker, side, lease):
        """Grant (True) or refuse the lease of ``lease`` seconds for ``side``."""
        side = sorted(set(side))
        lease = max(0.0, min(float(lease), MAX_LEASE))
        if asker not in side:
            return False
        now = self.clock()
        if self.side is not None and self.side != side and now < self.until:
            return False
        self.side, self.until = side, now + lease
        return True

    def lease_live(self):
        """A side may be serving on a tie: the membership must not change under it."""
        return self.side is not None and self.clock() < self.until
