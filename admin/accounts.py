"""User accounts: creation, removal, enrolment, password login and change, throttling."""
import hashlib
import math
import secrets
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import bcrypt
from sqlalchemy import String, bindparam, delete, exists, func, select
from sqlalchemy.exc import IntegrityError

from securifile.common.errors import ApiError, Conflict, Forbidden, NotFound, Unauthenticated
from securifile.common.paths import EMAIL_RE, MAX_EMAIL_LENGTH, check_username
from securifile.common.times import aware

from .coordination import insert_once
from .db import reading
from .models import Enrolment, Grant, RemovedAccount, RevokedCredential, User
from .passwords import BCRYPT_ROUNDS, MAX_BYTES, check_password, hash_password

ENROLMENT_SECONDS = 24 * 3600
# The hash of an account that has no password yet (it enrols first): never a bcrypt hash.
NO_PASSWORD = "!enrol"


def utcnow():
    return datetime.now(timezone.utc)


def check_email(email):
    """An address the account e-mail can be sent to (checked before the account exists)."""
    if not isinstance(email, str) or len(email) > MAX_EMAIL_LENGTH \
            or not EMAIL_RE.fullmatch(email):
        raise ApiError(f"invalid e-mail address {email!r}: use name@host.domain in ASCII",
                       code="invalid_email")
    return email.lower()


def code_hash(code):
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass
class NewAccount:
    user: User
    enrolment_code: str | None  # to be e-mailed when no password was given; never stored
    enrolment_expires: datetime | None


# What a request's ``Caller`` reads of its account (columns, not the entity).
CALLER_COLUMNS = (User.id, User.uid, User.username, User.email, User.admin, User.disabled,
                  User.valid_until, User.credential_generation)
# The account by name, and whether a credential id is revoked (no id: never, '= NULL').
CALLER_ACCOUNT = select(*CALLER_COLUMNS, exists().where(
    RevokedCredential.id == bindparam("credential", type_=String)).label("revoked")).where(
    User.username == bindparam("name", type_=String))
TRUSTED_PER_ACCOUNT = 16  # addresses remembered per account (the oldest is forgotten)


def _too_many(wait):
    wait = max(1, math.ceil(wait))
    return ApiError(f"too many failed logins; try again in {wait} s", status=429,
                    code="too_many_attempts", headers={"Retry-After": str(wait)})


class LoginThrottle:
    """Failed password checks, per account and per source address.

    Account: the first ``limit`` failures in ``window`` seconds are free; after that each
    attempt waits an exponential back-off (``base`` doubling, at most ``cap`` seconds) after
    the last failure, one attempt at a time. A back-off, never a lockout: a stranger who
    guesses cannot shut the owner out, and an address the owner logged in from before
    (``trusted_seconds``) skips the account's back-off altogether. Address: ``limit``
    failures in ``window`` and that address waits for the window.

    Attempts are reserved before the password is checked (``attempt``), so concurrent
    guesses count as failures until they are decided and cannot race past the limit.
    """

    def __init__(self, limit=5, window=300.0, base=1.0, cap=60.0, trusted_seconds=30 * 86400,
                 clock=time.monotonic, sweep_above=10_000):
        self.limit, self.window, self.base, self.cap = limit, window, base, cap
        self.trusted_seconds = trusted_seconds
        self.clock = clock
        self.sweep_above = sweep_above
        self._failures = {}  # key -> [times of failures inside the window]
        self._pending = {}  # key -> attempts being decided
        self._trusted = {}  # account key -> {address: time of its last success}
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

    def _trusted_address(self, account, address):
        seen = self._trusted.get(account, {}).get(address)
        return seen is not None and self.clock() - seen < self.trusted_seconds

    def _account_wait(self, account, address):
        if self._trusted_address(account, address):
            return 0
        times = self._recent(account)
        pending = self._pending.get(account, 0)
        if len(times) + pending < self.limit:
            return 0
        if pending:
            return 1  # one attempt at a time once the free ones are used up
        excess = len(times) - self.limit
        delay = min(self.cap, self.base * 2 ** min(excess, 32))
        return max(0, times[-1] + delay - self.clock())

    def _address_wait(self, address):
        times = self._recent(address)
        if len(times) + self._pending.get(address, 0) < self.limit:
            return 0
        return self.window - (self.clock() - times[0]) if times else 1

    def check(self, account, address):
        """Raise 429 with Retry-After when an attempt for ``account`` from ``address`` must wait."""
        with self._lock:
            wait = max(self._account_wait(account, address), self._address_wait(address))
        if wait > 0:
            raise _too_many(wait)

    @contextmanager
    def attempt(self, account, address):
        """Reserve one attempt; the body calls ``failed()`` or ``succeeded()`` on what it gets."""
        keys = (account, address)
        with self._lock:
            wait = max(self._account_wait(account, address), self._address_wait(address))
            if wait > 0:
                raise _too_many(wait)
            for key in keys:
                self._pending[key] = self._pending.get(key, 0) + 1
        outcome = _Outcome()
        try:
            yield outcome
        finally:
            with self._lock:
                for key in keys:
                    left = self._pending.get(key, 0) - 1
                    if left > 0:
                        self._pending[key] = left
                    else:
                        self._pending.pop(key, None)
                if outcome.ok is False:
                    self._record_failure(keys)
                elif outcome.ok:
                    self._succeeded(account, address)

    def _succeeded(self, account, address):
        """The account's failures are forgiven and ``address`` is trusted for it."""
        self._failures.pop(account, None)
        seen = self._trusted.setdefault(account, {})
        seen[address] = self.clock()
        if len(seen) > TRUSTED_PER_ACCOUNT:
            del seen[min(seen, key=seen.get)]

    def failed(self, *keys):
        with self._lock:
            self._record_failure(keys)

    def _record_failure(self, keys):
        for key in keys:
            self._failures[key] = self._recent(key) + [self.clock()]
        if len(self._failures) > self.sweep_above:  # names tried once and never again
            now = self.clock()
            self._failures = {k: v for k, v in self._failures.items()
                              if now - v[-1] < self.window}


class _Outcome:
    ok = None

    def failed(self):
        self.ok = False

    def succeeded(self):
        self.ok = True


def _new_generation(user):
    """Start a new credential generation: every token and certificate issued before dies."""
    user.credential_generation = (user.credential_generation or 0) + 1


class Accounts:
    def __init__(self, sessions, clock=utcnow, bcrypt_rounds=BCRYPT_ROUNDS, throttle=None,
                 enrolment_seconds=ENROLMENT_SECONDS, removed_namespace_days=30.0):
        self.sessions = sessions
        self.reading = reading(sessions)
        self.removed_namespace_days = removed_namespace_days
        self.clock = clock
        self.rounds = bcrypt_rounds
        self.enrolment_seconds = enrolment_seconds
        self.throttle = throttle or LoginThrottle()
        # Compared against when the user does not exist, so both paths cost one bcrypt check.
        self._dummy_hash = hash_password(secrets.token_hex(16), bcrypt_rounds).encode()

    def create(self, username, email, valid_days, password=None, admin=False, quota_bytes=None):
        """A new account. Without ``password`` it has none until its owner enrols with the
        code returned (to be e-mailed): the administrator never learns it."""
        check_username(username)
        email = check_email(email)
        if not (0 < float(valid_days) <= 3650):
            raise ApiError("valid_days must be between 0 and 3650", code="invalid_validity")
        if password is not None:
            check_password(password, username, email)
        now = self.clock()
        user = User(uid=uuid.uuid4().hex, username=username, email=email, credential_generation=0,
                    password_hash=NO_PASSWORD if password is None else hash_password(password, self.rounds),
                    admin=bool(admin), disabled=False, created_at=now, quota_bytes=quota_bytes,
                    valid_until=now + timedelta(days=float(valid_days)))
        code = expires = None
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
            if password is None:
                code, expires = self._new_enrolment(s, user)
        return NewAccount(user, code, expires)

    def _new_enrolment(self, s, user):
        s.execute(delete(Enrolment).where(Enrolment.user_id == user.id))
        code = secrets.token_urlsafe(24)
        expires = self.clock() + timedelta(seconds=self.enrolment_seconds)
        s.add(Enrolment(code_hash=code_hash(code), user_id=user.id, expires_at=expires))
        return code, expires

    def issue_enrolment(self, username):
        """A fresh enrolment code for ``username`` (a forgotten password); older codes die."""
        with self.sessions.begin() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"no user {username}", code="no_such_user")
            code, expires = self._new_enrolment(s, user)
            # A reset is for a password that is lost, perhaps stolen: whatever was issued
            # with it is refused from now on.
            _new_generation(user)
        return user, code, expires

    def enrol(self, username, code, password):
        """Set the password with an enrolment code: once, before it expires, for its account."""
        if not all(isinstance(v, str) and v for v in (username, code, password)):
            raise ApiError("username, code and password are required", code="missing_credentials")
        with self.sessions.begin() as s:
            row = s.get(Enrolment, code_hash(code))
            user = s.get(User, row.user_id) if row is not None else None
            if user is None or user.username != username.lower():
                raise Unauthenticated("unknown or used enrolment code", code="bad_enrolment_code")
            if aware(row.expires_at) <= self.clock():
                raise Unauthenticated("the enrolment code has expired: ask an administrator "
                                      "for a new one", code="enrolment_expired")
            self.check_active(user)
            check_password(password, user.username, user.email)
            # Used up in the same transaction that sets the password: a second use finds nothing.
            if s.execute(delete(Enrolment).where(Enrolment.code_hash == row.code_hash)).rowcount != 1:
                raise Unauthenticated("unknown or used enrolment code", code="bad_enrolment_code")
            s.execute(delete(Enrolment).where(Enrolment.user_id == user.id))
            user.password_hash = hash_password(password, self.rounds)
            _new_generation(user)
        return user

    def change_password(self, username, current, new, address):
        """The owner changes their password, proving it with the current one (throttled like
        a login, so a stolen token cannot guess it). Every token and certificate issued
        before is refused from now on; returns the account, for a fresh token."""
        if not isinstance(new, str) or not isinstance(current, str) or not current:
            raise ApiError("current_password and new_password are required",
                           code="missing_credentials")
        user = self.get(username)
        if user is None:
            raise NotFound(f"no user {username}", code="no_such_user")
        with self.throttle.attempt(("account", user.id), ("address", address)) as attempt:
            if not self._password_matches(user, current):
                attempt.failed()
                raise Unauthenticated("the current password is wrong", code="bad_credentials")
            attempt.succeeded()
        check_password(new, user.username, user.email)
        if new == current:
            raise ApiError("the new password must differ from the current one", code="weak_password")
        with self.sessions.begin() as s:
            row = s.get(User, user.id)
            row.password_hash = hash_password(new, self.rounds)
            s.execute(delete(Enrolment).where(Enrolment.user_id == user.id))
            _new_generation(row)
        return row

    def remove(self, username):
        """Remove the account; its credentials die with it. Its id is recorded as removed
        (tokens and certificates carry it: nodes learn it is gone on their next decision),
        the grants it was given and the grants on its files go, and its files stay sealed
        until the purge date (admin/namespaces.py)."""
        with self.sessions.begin() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"no user {username}", code="no_such_user")
            if user.admin:
                self._keep_an_admin(s, user)
            s.execute(delete(Grant).where((Grant.grantee == username) | (Grant.owner == username)))
            s.execute(delete(Enrolment).where(Enrolment.user_id == user.id))
            s.execute(delete(RevokedCredential).where(RevokedCredential.uid == user.uid))
            now = self.clock()
            s.add(RemovedAccount(uid=user.uid, username=user.username, removed_at=now,
                                 purge_after=now + timedelta(days=self.removed_namespace_days)))
            s.delete(user)
        return user

    # -- credentials -----------------------------------------------------------------------

    def revoke_credential(self, uid, credential, expires):
        """Refuse ``credential`` (a token's jti, 'cert:SERIAL') from now until it expires."""
        if not uid or not credential:
            return False
        until = datetime.fromtimestamp(float(expires or 0), timezone.utc)
        with self.sessions.begin() as s:  # once, however many revoke it at the same time
            s.execute(insert_once(s, RevokedCredential,
                                  {"id": credential, "uid": uid, "expires_at": until}, "id"))
        return True

    def prune_revoked(self):
        """Forget revocations of credentials that have expired anyway."""
        with self.sessions.begin() as s:
            return s.execute(delete(RevokedCredential)
                             .where(RevokedCredential.expires_at < self.clock())).rowcount

    def caller_account(self, principal):
        """``(account, revoked)`` for a user's credential, read in one statement: the
        account's row by name (None: no such account; the columns a ``Caller`` uses) and
        whether the credential's id is among the revoked ones."""
        with self.reading() as s:
            row = s.execute(CALLER_ACCOUNT, {"name": principal.name,
                                             "credential": principal.credential}).first()
        return (None, False) if row is None else (row, row.revoked)

    def credential_problem(self, user, uid, credential, generation=0, revoked=None):
        """(state, reason) when a credential with ``uid``, id ``credential`` and issued in
        ``generation`` may not act for ``user`` (None: no such account), else None. States:
        'removed' (the id is not the account's: removed, or a credential from before account
        ids), 'revoked' (logged out, or issued before the last password change or reset).
        ``revoked``: whether the id is revoked, when the caller read it already."""
        if user is None or uid != user.uid:
            if not uid:
                return "removed", "the credential carries no account id: log in again"
            return "removed", "the credential belongs to a removed account"
        if generation != (user.credential_generation or 0):
            return "revoked", ("the credential was issued before the password was last "
                               "changed or reset: log in again")
        if credential:
            if revoked is None:
                with self.sessions() as s:
                    revoked = s.get(RevokedCredential, credential) is not None
            if revoked:
                return "revoked", "the credential was revoked (logged out): log in again"
        return None

    def check_credential(self, user, principal, revoked=None):
        """Raise 401 when the caller's credential may not act for ``user``."""
        problem = self.credential_problem(user, principal.uid, principal.credential,
                                          principal.generation, revoked)
        if problem is not None:
            raise Unauthenticated(problem[1], code="credential_revoked")

    def _keep_an_admin(self, s, leaving):
        """Refuse to take away the last active administrator (nobody could administer)."""
        others = s.scalars(select(User.id).where(User.admin.is_(True), User.id != leaving.id,
                                                 User.disabled.is_(False))
                           .with_for_update()).all()
        if not others:
            raise Conflict(f"{leaving.username} is the last administrator: make another "
                           "account an administrator first", code="last_admin")

    def get(self, username):
        with self.sessions() as s:
            return s.scalar(select(User).where(User.username == username))

    def exists(self, username):
        with self.reading() as s:
            return s.scalar(select(func.count()).select_from(User)
                            .where(User.username == username)) > 0

    def set_disabled(self, username, disabled):
        with self.sessions.begin() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"no user {username}", code="no_such_user")
            if disabled and user.admin and not user.disabled:
                self._keep_an_admin(s, user)
            user.disabled = disabled
            return user

    def check_active(self, user):
        """Raise Forbidden with the reason when an account may not be used now."""
        if user.disabled:
            raise Forbidden(f"account {user.username} is disabled", code="account_disabled")
        if aware(user.valid_until) <= self.clock():
            raise Forbidden(f"account {user.username} expired on "
                            f"{aware(user.valid_until):%Y-%m-%d %H:%M} UTC", code="account_expired")

    def _password_matches(self, user, password):
        """One bcrypt check whatever happens, so timing tells nothing about the account."""
        stored = user.password_hash.encode() if user is not None else self._dummy_hash
        if not stored.startswith(b"$2"):  # no password yet: the account must enrol
            stored, user = self._dummy_hash, None
        ok = bcrypt.checkpw(password.encode()[:MAX_BYTES], stored)
        return ok and user is not None and len(password.encode()) <= MAX_BYTES

    def authenticate(self, login, password, address):
        """The user for a user name or e-mail and password, or an error that says why not.

        Name and e-mail of one account share its throttle bucket (its id)."""
        if not isinstance(login, str) or not isinstance(password, str) or not login \
                or not password:
            raise ApiError("username and password are required", code="missing_credentials")
        key = login.lower()
        with self.sessions() as s:
            column = User.email if "@" in key else User.username
            user = s.scalar(select(User).where(column == key))
        account = ("account", user.id) if user is not None else ("login", key)
        with self.throttle.attempt(account, ("address", address)) as attempt:
            if not self._password_matches(user, password):
                attempt.failed()
                raise Unauthenticated("wrong user name or password", code="bad_credentials")
            self.check_active(user)
            attempt.succeeded()
        return user
