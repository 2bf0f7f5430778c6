"""Bearer tokens: JWTs signed with Ed25519 by the admin side and verified by nodes locally.

Only the holder of the private key (the admin server, or the provisioning script until the
admin server exists) can mint; every node holds just the public key.

``jwt`` is imported on first use: with it comes the ``cryptography`` package (for Ed25519),
about 10 MiB of a process's memory, which a node whose users present certificates never
needs.
"""
import time
import uuid
from pathlib import Path

from .errors import Unauthenticated

ISSUER = "securifile"
ALGORITHM = "EdDSA"


def load_private_key(path):
    return Path(path).read_bytes()


def load_public_key(path):
    return Path(path).read_bytes()


ROLE_ADMIN_SERVER = "admin-server"


def mint_token(private_key_pem, username, ttl_seconds=86400, *, admin=False, not_after=None,
               now=None, role=None, uid=None, generation=0):
    """A signed token for ``username``; it never outlives ``not_after`` (the account).

    ``uid``: the account's immutable id. The admin server and nodes refuse a user token
    whose id is not the current account's (a removed account's token, or one minted without).
    ``generation``: the account's credential generation; a password change starts a new one
    and older tokens are refused.

    ``role``: a token for a service rather than a user (``ROLE_ADMIN_SERVER``: the admin
    server calling nodes in no-TLS debug mode); user endpoints refuse such tokens."""
    now = int(now if now is not None else time.time())
    exp = now + int(ttl_seconds)
    if not_after is not None:
        exp = min(exp, int(not_after))
    claims = {"iss": ISSUER, "sub": username, "iat": now, "exp": exp, "jti": uuid.uuid4().hex}
    if uid:
        claims["uid"] = uid
    if generation:
        claims["gen"] = int(generation)
    if admin:
        claims["adm"] = True
    if role:
        claims["role"] = role
    import jwt
    return jwt.encode(claims, private_key_pem, algorithm=ALGORITHM), exp


def verify_token(public_key_pem, token):
    """The token's claims, or Unauthenticated with a reason a user can act on."""
    import jwt
    try:
        return jwt.decode(
            token, public_key_pem, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token has expired: log in again", code="token_expired") from None
    except jwt.InvalidTokenError as e:
        raise Unauthenticated(f"invalid token: {e}", code="invalid_token") from None
