"""Limits on uploads that protect a node and a file's other writers from one slow or greedy
client: a user's concurrent uploads are capped, and an upload that stops making progress
loses its lock.

The rate is judged at each lock renewal (every third of the lease): an upload that brought
fewer than ``min_rate`` bytes a second since the previous one is cut off, so a trickled body
can no longer keep a file locked for ever by having its lease renewed without progress.
"""
import time

from securifile.common.errors import ApiError


class TooManyUploads(ApiError):
    status, code = 429, "too_many_uploads"


class UploadSlots:
    """At most ``per_user`` uploads at a time for each user on this node."""

    def __init__(self, per_user):
        self.per_user = per_user
        self._busy = {}

    def take(self, user):
        """One slot for ``user``; TooManyUploads (429) when all are in use."""
        if self.per_user and self._busy.get(user, 0) >= self.per_user:
            raise TooManyUploads(f"{user} already has {self.per_user} uploads under way on this "
                                 "server; wait for one to finish", headers={"Retry-After": "1"})
        self._busy[user] = self._busy.get(user, 0) + 1

    def give_back(self, user):
        n = self._busy.get(user, 0) - 1
        if n > 0:
            self._busy[user] = n
        else:
            self._busy.pop(user, None)


class ProgressWatch:
    """Whether an upload keeps at least ``min_rate`` bytes a second between two checks."""

    def __init__(self, min_rate, clock=time.monotonic):
        self.min_rate = min_rate
        self.clock = clock
        self._at = clock()
        self._size = 0

    def too_slow(self, size):
        """Called at each renewal with the bytes received so far."""
        now = self.clock()
        slow = self.min_rate > 0 and size - self._size < self.min_rate * (now - self._at)
        self._at, self._size = now, size
        return slow
