"""The login back-off counted in the database, so that two admin server instances keep one
count: a guesser who alternates between them gets no more attempts than with one.

Failed attempts and trusted addresses are rows; attempts being decided (``pending``) stay
in each instance's memory, so at most one undecided attempt per instance runs past the
limit. Times are wall-clock seconds: the instances' clocks must agree (NTP) within the
back-off's precision, a second or so.
"""
import time

from sqlalchemy import delete, func, select

from .accounts import TRUSTED_PER_ACCOUNT, LoginThrottle
from .coordination import upsert
from .models import LoginFailure, LoginTrust


def key_text(key):
    """("account", 5) -> "account:5": one column for every kind of key."""
    kind, value = key
    return f"{kind}:{value}"[:300]


class SharedLoginThrottle(LoginThrottle):
    def __init__(self, sessions, clock=time.time, **kwargs):
        super().__init__(clock=clock, **kwargs)
        self.sessions = sessions

    def _recent(self, key):
        since = self.clock() - self.window
        with self.sessions() as s:
            return list(s.scalars(select(LoginFailure.at)
                                  .where(LoginFailure.key == key_text(key), LoginFailure.at > since)
                                  .order_by(LoginFailure.at)))

    def _record_failure(self, keys):
        now = self.clock()
        with self.sessions.begin() as s:
            s.add_all([LoginFailure(key=key_text(k), at=now) for k in keys])
            # Failures older than the window count for nothing: forget them (any instance).
            s.execute(delete(LoginFailure).where(LoginFailure.at <= now - self.window))

    def _trusted_address(self, account, address):
        with self.sessions() as s:
            seen = s.get(LoginTrust, (key_text(account), key_text(address)))
        return seen is not None and self.clock() - seen.at < self.trusted_seconds

    def _succeeded(self, account, address):
        now, who, where = self.clock(), key_text(account), key_text(address)
        with self.sessions.begin() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.key == who))
            # One upsert: the same login succeeding on two instances at once must not fail
            # on the second's insert.
            s.execute(upsert(s, LoginTrust, {"account": who, "address": where, "at": now},
                             ("account", "address"), ("at",)))
            count = s.scalar(select(func.count()).where(LoginTrust.account == who))
            if count > TRUSTED_PER_ACCOUNT:
                oldest = s.scalar(select(LoginTrust.address).where(LoginTrust.account == who)
                                  .order_by(LoginTrust.at).limit(1))
                s.execute(delete(LoginTrust).where(LoginTrust.account == who,
                                                   LoginTrust.address == oldest))
