"""Password policy, hashing and generation.

A password must be at least 12 characters, must not be (or contain) the account's name or
e-mail address, and must resist guessing: zxcvbn (Dropbox's estimator, which knows common
passwords, words, keyboard patterns and the account's own details) must score it 3 or more.
"""
import secrets

import bcrypt
from zxcvbn import zxcvbn

from securifile.common.errors import ApiError

MIN_LENGTH = 12
MAX_BYTES = 72  # bcrypt ignores what comes after
MIN_SCORE = 3
BCRYPT_ROUNDS = 12


def hash_password(password, rounds=BCRYPT_ROUNDS):
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def personal_words(username, email):
    """What a guesser tries first for this account: its name, the e-mail and its parts."""
    words = {w.lower() for w in (username, email) if w}
    if email and "@" in email:
        local, _, domain = email.lower().partition("@")
        words |= {local, domain.split(".")[0]}
    return {w for w in words if len(w) >= 3}


def check_password(password, username=None, email=None):
    """Raise ApiError 400 ``weak_password`` (with the reason) unless the policy holds."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise ApiError(f"password must have at least {MIN_LENGTH} characters", code="weak_password")
    if len(password.encode()) > MAX_BYTES:
        raise ApiError(f"password longer than {MAX_BYTES} bytes (bcrypt's limit)",
                       code="password_too_long")
    lowered = password.lower()
    words = personal_words(username, email)
    if any(w in lowered for w in words):
        raise ApiError("password must not contain the user name or e-mail address",
                       code="weak_password")
    verdict = zxcvbn(password, user_inputs=sorted(words))
    if verdict["score"] < MIN_SCORE:
        advice = verdict["feedback"].get("warning") or "it is too easy to guess"
        hints = " ".join(verdict["feedback"].get("suggestions") or [])
        raise ApiError(f"password too weak: {advice}. {hints}".strip(), code="weak_password")
    return password


def generate_password(username=None, email=None):
    """A random password that the policy accepts (for the launcher's first accounts)."""
    while True:
        candidate = secrets.token_urlsafe(15)  # 20 characters, 120 bits
        try:
            return check_password(candidate, username, email)
        except ApiError:
            continue
