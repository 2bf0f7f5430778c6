"""Who is calling: a user (client certificate or bearer token) or a fellow node (certificate).

Servers resolve the caller once per request into a Principal; what the caller may do is the
authoriser's business, not this module's.
"""
import hmac
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from .certnames import (
    ROLE_ADMIN, ROLE_MONITOR, ROLE_NODE, ROLE_USER, peer_credential, subject_identity)
from .errors import Forbidden, Unauthenticated
from .tokens import ROLE_ADMIN_SERVER, verify_token

PEER_SECRET_HEADER = "X-SecuriFile-Peer-Secret"


@dataclass(frozen=True)
class Principal:
    """The caller. A user's ``uid`` (the account id), ``credential`` (the token's jti or
    'cert:SERIAL') and ``expires`` (epoch seconds) come from the credential itself, so that
    the admin server and nodes can refuse a removed account's or a revoked credential."""

    name: str
    kind: str  # "user", "node", "admin" (the admin server) or "monitor"
    admin: bool = False
    uid: str | None = None
    credential: str | None = None
    expires: float | None = None
    generation: int = 0  # the account's credential generation it was issued in


def token_generation(claims):
    """The credential generation a token was minted in (-1, matching no account, if bad)."""
    gen = claims.get("gen", 0)
    return gen if isinstance(gen, int) and not isinstance(gen, bool) else -1


class VerifiedTokens:
    """Bearer tokens whose signature checked out, with their claims, until they expire: a
    client sends the same token with every request, and checking its signature again is
    the costliest step of authenticating it. Only the signature and claims are remembered
    (a token byte for byte as verified); whether the account may still act, or the token
    was revoked, is for the server to ask on each request. Bounded: least recently used
    first out."""

    def __init__(self, public_key, size=1024, clock=time.time):
        self.public_key, self.size, self.clock = public_key, size, clock
        self._claims = OrderedDict()
        self._lock = threading.Lock()

    def claims(self, token):
        with self._lock:
            claims = self._claims.get(token)
            if claims is not None:
                if claims["exp"] > self.clock():  # as PyJWT decides it, without leeway
                    self._claims.move_to_end(token)
                    return dict(claims)
                del self._claims[token]
        claims = verify_token(self.public_key, token)  # raises for a bad or expired one
        if isinstance(claims.get("exp"), (int, float)):
            with self._lock:
                self._claims[token] = claims
                while len(self._claims) > self.size:
                    self._claims.popitem(last=False)
        return dict(claims)


class Authenticator:
    """Resolves callers from a verified TLS certificate, a bearer token or (no-TLS) a secret."""

    def __init__(self, token_public_key, node_names, peer_secret=None):
        self.token_public_key = token_public_key
        self.tokens = VerifiedTokens(token_public_key)
        # A set given is shared, not copied: the membership changes it as servers come and go.
        self.node_names = node_names if isinstance(node_names, set) else set(node_names)
        self.peer_secret = peer_secret

    def peer_certificate(self, request):
        """The verified client certificate of the request's connection (None: plain HTTP,
        or none presented)."""
        return self._connection_identity(request)[0]

    def _connection_identity(self, request):
        """(certificate, (name, role), user credential) of the request's connection, worked
        out once per connection and kept on its stream: a TLS connection's certificate
        cannot change, and asking the session and parsing the certificate again cost each
        small upload more than its lock (docs/PERFORMANCE.md "Peer channels")."""
        stream = getattr(request.connection, "stream", None)
        known = getattr(stream, "securifile_identity", None)
        if known is not None:
            return known
        try:
            cert = request.get_ssl_certificate()
        except Exception:  # plain HTTP connection, or no certificate presented
            cert = None
        identity = (cert, subject_identity(cert) if cert else (None, None),
                    peer_credential(cert) if cert else None)
        if stream is not None:
            stream.securifile_identity = identity
        return identity

    def user(self, request):
        cert, (name, role), credential = self._connection_identity(request)
        if cert:
            if role == ROLE_USER and name:
                uid, credential, expires, generation = credential
                return Principal(name, "user", uid=uid, credential=credential, expires=expires,
                                 generation=generation)
            if role in (ROLE_NODE, ROLE_ADMIN, ROLE_MONITOR):
                raise Forbidden("server and monitoring certificates cannot act as users",
                                code="not_a_user")
        claims = self._bearer_claims(request)
        if claims is not None:
            if claims.get("role"):
                raise Forbidden("a service token cannot act as a user", code="not_a_user")
            return Principal(claims["sub"], "user", bool(claims.get("adm")),
                             uid=claims.get("uid"), credential=claims.get("jti"),
                             expires=claims.get("exp"), generation=token_generation(claims))
        raise Unauthenticated(
            "authenticate with a client certificate or 'Authorization: Bearer TOKEN'")

    def _bearer_claims(self, request):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.tokens.claims(token.strip())
        return None

    def admin_server(self, request):
        """The admin server itself: its certificate, or in no-TLS mode a short-lived token
        that only it can sign. The nodes' shared debug secret never passes here: a node
        must not take its peers offline."""
        cert, (name, role), _ = self._connection_identity(request)
        if cert:
            if role == ROLE_ADMIN:
                return Principal(name, "admin")
            raise Forbidden("this endpoint is for the admin server only", code="not_the_admin")
        claims = self._bearer_claims(request)
        if claims is not None and claims.get("role") == ROLE_ADMIN_SERVER:
            return Principal(claims["sub"], "admin")
        raise Forbidden("this endpoint needs the admin server's certificate (or, without TLS, "
                        "its signed token)", code="not_the_admin")

    def monitor(self, request):
        """Who may read metrics: a monitoring certificate, or an administrator's token
        (the admin server also checks that the account is still an active administrator)."""
        cert, (name, role), _ = self._connection_identity(request)
        if cert:
            if role == ROLE_MONITOR and name:
                return Principal(name, "monitor")
        claims = self._bearer_claims(request)
        if claims is not None and not claims.get("role") and claims.get("adm"):
            return Principal(claims["sub"], "user", True, uid=claims.get("uid"),
                             credential=claims.get("jti"), expires=claims.get("exp"),
                             generation=token_generation(claims))
        if claims is not None or cert:
            raise Forbidden("metrics are for monitoring certificates and administrators",
                            code="not_a_monitor")
        raise Unauthenticated("authenticate with a monitoring certificate or an administrator's "
                              "'Authorization: Bearer TOKEN'")

    def _secret(self, request, who):
        secret = request.headers.get(PEER_SECRET_HEADER, "")
        if self.peer_secret and secret and hmac.compare_digest(secret, self.peer_secret):
            return Principal(request.headers.get("X-SecuriFile-Node", "?"), "node")
        raise Forbidden(f"this endpoint needs a certificate of the {who} from the cluster's CA",
                        code="not_a_node")

    def node(self, request):
        cert, (name, role), _ = self._connection_identity(request)
        if cert:
            if role == ROLE_NODE and name in self.node_names:
                return Principal(name, "node")
            raise Forbidden("this endpoint is for the cluster's nodes only", code="not_a_node")
        return self._secret(request, "node")
