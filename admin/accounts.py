"""User accounts: creation, removal, password login with bcrypt and throttling."""
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import bcrypt
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from securifile.common.errors import ApiError, Conflict, Forbidden, NotFound, Unauthenticated
from securifile.common.paths import check_username

from .models import Grant, User

MIN_PASSWORD = 8
BCRYPT_ROUNDS = 12


def utcnow():
    return datetime.now(timezone.utc)


def aware(dt):
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def hash_password(password, rounds=BCRYPT_ROUNDS):
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def check_password_rules(password):
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ApiError(f"password must have at least {MIN_PASSWORD} characters", code="weak_password")
    if len(password.encode()) > 72:
        raise ApiError("password longer than 72 bytes (bcrypt's limit)", code="password_too_long")


def check_email(email):
    if not isinstance(email, str) or email.count("@") != 1 or len(email) > 254 \
            or any(c.isspace() or ord(c) < 32 for c in email):
        raise ApiError(f"invalid e-mail address {email!r}", code="invalid_email")
    local, domain = email.split("@")
    if not local or not domain or domain.startswith(".") or domain.endswith("."):
        raise ApiError(f"invalid e-mail address {email!r}", code="invalid_email")
    return email.lower()


@dataclass
class NewAccount:
    user: User
    password: str  # the initial password, to be e-mailed; never stored


class LoginThrottle:
    """Failed logins per account and per address: after ``limit`` failures in ``window``
    seconds further attempts are refused until the window has passed."""

    def __init__(self, limit=5, window=300.0, clock=time.monotonic, sweep_above=10_000):
        self.limit, self.window, self.clock = limit, window, clock
        self.sweep_above = sweep_above
        self._failures = {}
        self._lock = threading.Lock()

    def _recent(self, key):
        """The key's failures inside the window; keys without any are forgotten, so that
        a stream of made-up names and addresses does not grow the table."""
        now = self.clock()
        times = [t for t in self._failures.get(key, []) if now - t < self.window]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def check(self, *keys):
        with self._lock:
            for key in keys:
                times = self._recent(key)
                if len(times) >= self.limit:
                    wait = int(self.window - (self.clock() - times[0])) + 1
                    raise ApiError(f"too many failed logins; try again in {wait} s", status=429,
                                   code="too_many_attempts", headers={"Retry-After": str(wait)})

    def failed(self, *keys):
        with self._lock:
            for key in keys:
                self._failures[key] = self._recent(key) + [self.clock()]
            if len(self._failures) > self.sweep_above:  # names tried once and never again
                now = self.clock()
                self._failures = {k: v for k, v in self._failures.items()
                                  if now - v[-1] < self.window}

    def succeeded(self, key):
        with self._lock:
            self._failures.pop(key, None)


class Accounts:
    def __init__(self, sessions, clock=utcnow, bcrypt_rounds=BCRYPT_ROUNDS):
        self.sessions = sessions
        self.clock = clock
        self.rounds = bcrypt_rounds
        self.throttle = LoginThrottle()
        # Compared against when the user does not exist, so both paths cost one bcrypt check.
        self._dummy_hash = hash_password(secrets.token_hex(16), bcrypt_rounds).encode()

    def create(self, username, email, valid_days, password=None, admin=False):
        check_username(username)
        email = check_email(email)
        if not (0 < float(valid_days) <= 3650):
            raise ApiError("valid_days must be between 0 and 3650", code="invalid_validity")
        if password is None:
            password = secrets.token_urlsafe(12)
        check_password_rules(password)
        now = self.clock()
        user = User(username=username, email=email, password_hash=hash_password(password, self.rounds),
                    admin=bool(admin), disabled=False, created_at=now,
                    valid_until=now + timedelta(days=float(valid_days)))
        with self.sessions.begin() as s:
            clash = s.scalar(select(User).where((User.username == username) | (User.email == email)))
            if clash is not None:
                what = "user name" if clash.username == username else "e-mail address"
                raise Conflict(f"{what} already in use", code="user_exists")
            s.add(user)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict("user name or e-mail already in use", code="user_exists") from None
        return NewAccount(user, password)

    def remove(self, username):
        with self.sessions.begin() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"no user {username}", code="no_such_user")
            s.execute(delete(Grant).where(Grant.grantee == username))
            s.delete(user)
        return user

    def get(self, username):
        with self.sessions() as s:
            return s.scalar(select(User).where(User.username == username))

    def set_disabled(self, username, disabled):
        with self.sessions.begin() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"no user {username}", code="no_such_user")
            user.disabled = disabled
            return user

    def check_active(self, user):
        """Raise Forbidden with the reason when an account may not be used now."""
        if user.disabled:
            raise Forbidden(f"account {user.username} is disabled", code="account_disabled")
        if aware(user.valid_until) <= self.clock():
            raise Forbidden(f"account {user.username} expired on "
                            f"{aware(user.valid_until):%Y-%m-%d %H:%M} UTC", code="account_expired")

    def authenticate(self, login, password, address):
        """The user for a user name or e-mail and password, or an error that says why not."""
        if not isinstance(login, str) or not isinstance(password, str) or not login \
                or not password:
            raise ApiError("username and password are required", code="missing_credentials")
        key = login.lower()
        self.throttle.check(("account", key), ("address", address))
        with self.sessions() as s:
            column = User.email if "@" in key else User.username
            user = s.scalar(select(User).where(column == key))
        stored = user.password_hash.encode() if user else self._dummy_hash
        ok = bcrypt.checkpw(password.encode()[:72], stored) and user is not None \
            and len(password.encode()) <= 72
        if not ok:
            self.throttle.failed(("account", key), ("address", address))
            raise Unauthenticated("wrong user name or password", code="bad_credentials")
        self.check_active(user)
        self.throttle.succeeded(("account", key))
        return user
