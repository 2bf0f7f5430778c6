"""Quotas: how many bytes an account's namespace may hold, and reservations that make the
limit hold while uploads are in flight.

Usage is the catalogue's (``owner_usage``: each file once, whatever the number of
replicas). A node asks for a reservation before it accepts an upload's bytes (the declared
length, or step by step for a body of unknown length); the grant and the check are one
transaction that first locks the owner's account row, so two uploads cannot both see the
same headroom (a row lock on PostgreSQL, the database's write lock on SQLite). A
modification reserves only what the file grows by. A reservation ends when the node's
report of the stored file is applied (``finish``), when the node gives it back
(``release``), or when it expires: a node that dies mid-upload holds nothing for long.
"""
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from securifile.common.errors import ApiError, Forbidden, NotFound

from .db import reading
from .models import File, OwnerUsage, QuotaReservation, User

RESERVATION_SECONDS = 120.0


class QuotaExceeded(ApiError):
    status, code = 507, "quota_exceeded"


def check_quota(value):
    """A quota as the API takes it: a whole number of bytes >= 0, or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 63:
        raise ApiError("quota_bytes must be a whole number of bytes (0 or more) or null for "
                       "no limit", code="bad_quota")
    return value


class Quotas:
    def __init__(self, sessions, clock, reservation_seconds=RESERVATION_SECONDS):
        self.sessions = sessions
        self.clock = clock
        self.reservation_seconds = reservation_seconds

    def set_quota(self, username, quota_bytes):
        """Set (or, with None, lift) ``username``'s quota; the account's usage afterwards.
        A quota below the current usage is allowed: it refuses growth until files go."""
        quota_bytes = check_quota(quota_bytes)
        with self.sessions.begin() as s:
            user = s.scalar(select(User).where(User.username == username).with_for_update())
            if user is None:
                raise NotFound(f"no user {username}", code="no_such_user")
            user.quota_bytes = quota_bytes
        return self.usage(username)

    def usage(self, username):
        """``{"quota_bytes", "used_bytes", "reserved_bytes"}`` of an account's namespace."""
        with reading(self.sessions)() as s:
            quota = s.scalar(select(User.quota_bytes).where(User.username == username))
            return {"quota_bytes": quota, "used_bytes": self._used(s, username),
                    "reserved_bytes": self._reserved(s, username)}

    def _used(self, s, owner):
        return s.scalar(select(OwnerUsage.total_bytes).where(OwnerUsage.owner == owner)) or 0

    def _reserved(self, s, owner, besides=None):
        q = select(func.coalesce(func.sum(QuotaReservation.bytes), 0)).where(
            QuotaReservation.owner == owner, QuotaReservation.expires_at > self.clock())
        if besides is not None:
            q = q.where(QuotaReservation.id != besides)
        return int(s.scalar(q))

    def reserve(self, node, rid, owner, path, size, wanted=None):
        """Let ``owner/path`` reach ``size`` bytes (the upload's, up to ``wanted`` if the
        headroom allows: a body of unknown length asks a step ahead); QuotaExceeded (507)
        when even ``size`` does not fit.

        The answer's ``covered_bytes`` is the file size the reservation now covers (None: no
        quota, nothing to reserve); calling again with the same ``rid`` moves it, and renews
        its expiry."""
        wanted = max(size, wanted or size)
        now = self.clock()
        with self.sessions.begin() as s:
            # Writing the account row first takes the lock every reservation of this owner
            # queues on; everything read after it is what the previous holder committed.
            s.execute(update(User).where(User.username == owner)
                      .values(quota_bytes=User.quota_bytes))
            quota = s.scalar(select(User.quota_bytes).where(User.username == owner))
            mine = s.get(QuotaReservation, rid)
            if mine is not None and mine.node != node:
                raise Forbidden(f"reservation {rid} is another server's", code="not_yours")
            if quota is None:
                if mine is not None:
                    s.delete(mine)
                return {"id": rid, "owner": owner, "quota_bytes": None, "covered_bytes": None,
                        "used_bytes": self._used(s, owner)}
            existing = s.scalar(select(File.size).where(File.owner == owner, File.path == path)) or 0
            used, others = self._used(s, owner), self._reserved(s, owner, besides=rid)
            headroom = quota - used - others
            need = max(0, size - existing)
            if need > max(0, headroom):  # a file that does not grow always fits
                raise QuotaExceeded(
                    f"quota of {owner} exceeded: {used} bytes used, {others} reserved by uploads "
                    f"in progress, quota {quota} bytes; this upload needs {need} more",
                    used_bytes=used, quota_bytes=quota, reserved_bytes=others,
                    needed_bytes=need)
            grant = max(need, min(max(0, wanted - existing), max(0, headroom)))
            expires = now + timedelta(seconds=self.reservation_seconds)
            if mine is None:
                s.add(QuotaReservation(id=rid, node=node, owner=owner, path=path, bytes=grant,
                                       expires_at=expires))
            else:
                mine.bytes, mine.expires_at = grant, expires
        return {"id": rid, "owner": owner, "quota_bytes": quota, "used_bytes": used,
                "reserved_bytes": others + grant, "covered_bytes": existing + grant,
                "expires_in": self.reservation_seconds}

    def release(self, node, rid):
        """The node gives a reservation back (its upload failed); False if there was none."""
        with self.sessions.begin() as s:
            return s.execute(delete(QuotaReservation).where(
                QuotaReservation.id == rid, QuotaReservation.node == node)).rowcount > 0

    def finish(self, s, node, rids):
        """In a report's transaction: the files are counted now, their reservations end."""
        rids = sorted(set(rids))
        for i in range(0, len(rids), 500):
            s.execute(delete(QuotaReservation).where(QuotaReservation.id.in_(rids[i:i + 500]),
                                                     QuotaReservation.node == node))

    def prune_expired(self):
        with self.sessions.begin() as s:
            return s.execute(delete(QuotaReservation)
                             .where(QuotaReservation.expires_at <= self.clock())).rowcount
