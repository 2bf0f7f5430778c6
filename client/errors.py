"""What the client raises: typed server answers, and the ways the cluster can be unreachable.

Every exception callers see derives from ``ClientError``; a server's JSON error answer
(``{"error": {"code", "message", ...}}``) becomes the ``ServerError`` subclass of its status.
"""

# 503 codes by which a server says that it serves nobody now (it is verifying, failed or
# offline, cut off from the majority, or just restarted and not yet caught up): the next
# server may serve. Other 503s (``no_holder_running``) are about the file, not the server.
NOT_SERVING_CODES = frozenset({"server_not_running", "no_quorum", "not_synced"})


class ClientError(Exception):
    """Everything the client raises derives from this."""

    # An answer to a request whose first server did not answer (ClusterClient.request): a
    # 423 may then be the lock of that lost request, held until the peers see it down.
    after_lost_request = False


class ServerError(ClientError):
    """A server answered with an error: its HTTP status and its JSON ``{"error": ...}``."""

    def __init__(self, status, code, message, *, url=None, details=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.url = url
        self.details = details or {}

    def __str__(self):
        return f"{self.message} ({self.code}, HTTP {self.status})"


class BadRequest(ServerError):
    """400: a bad path, a wrong digest, a malformed request (also raised before sending)."""


class Unauthorized(ServerError):
    """401: no credentials, or an expired or invalid token."""


class PermissionDenied(ServerError):
    """403: authenticated, but not allowed to do this."""


class FileNotFound(ServerError):
    """404: no such file."""


class PathConflict(ServerError):
    """409: the name clashes with a folder or a file on the way (``a/x`` file vs ``a/x/y``)."""


class FileLocked(ServerError):
    """423: someone else is modifying the file right now."""


class RateLimited(ServerError):
    """429: too many attempts (failed logins), or a user's uploads at a time on a node
    (``too_many_uploads``); ``details`` may say when to try again."""


class NoHolderAvailable(ServerError):
    """503: no server holding the file is running."""


class StorageFull(ServerError):
    """507: the server has no space for the file."""


DEFAULT_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
    409: "conflict", 423: "locked", 429: "too_many_attempts", 503: "unavailable",
    507: "insufficient_storage",
}
STATUS_ERRORS = {
    400: BadRequest, 401: Unauthorized, 403: PermissionDenied, 404: FileNotFound,
    409: PathConflict, 423: FileLocked, 429: RateLimited, 503: NoHolderAvailable,
    507: StorageFull,
}


class TransportError(ClientError):
    """The cluster could not be reached well enough to finish the request."""


class NoServerAvailable(TransportError):
    """Every known server failed to answer; ``failures`` lists (url, error) pairs."""

    def __init__(self, failures, message=None):
        self.failures = list(failures)
        detail = "; ".join(f"{url}: {describe_error(err)}" for url, err in self.failures)
        super().__init__(message or f"no server answered ({detail or 'no servers configured'})")


class NoRunningServer(NoServerAvailable):
    """The admin server lists no storage server that is running."""

    def __init__(self, servers):
        self.servers = list(servers)
        states = ", ".join(f"{s.get('name')} {s.get('status')}" for s in self.servers)
        super().__init__([], f"no storage server is running ({states or 'none registered'})")


class NoServerServing(NoServerAvailable):
    """Every server that answered said it does not serve now, and still did after ``waited``
    seconds of asking again."""

    def __init__(self, failures, waited):
        self.waited = waited
        detail = "; ".join(f"{url}: {describe_error(err)}" for url, err in failures)
        super().__init__(failures, f"no server is serving now, still after {waited:g} s of "
                                   f"retrying ({detail or 'no servers'})")


class HolderUnreachable(TransportError):
    """The servers kept naming a holder that does not answer, past the retry budget."""

    def __init__(self, url, error, attempts):
        self.url, self.error, self.attempts = url, error, attempts
        super().__init__(
            f"the server holding the file ({url}) does not answer after {attempts} attempts: "
            f"{describe_error(error)}")


class RedirectRefused(ClientError):
    """A redirect pointed outside the known server list; credentials are not sent there."""

    def __init__(self, location):
        self.location = location
        super().__init__(f"refusing to follow a redirect to unknown server {location}")


class TooManyRedirects(ClientError):
    """The servers redirected in a loop."""


class TLSFailure(ClientError):
    """The TLS handshake failed for a reason failover cannot fix (certificates, protocol)."""


class ProtocolError(ClientError):
    """A server answered something this client cannot make sense of."""


class DigestMismatch(ClientError):
    """The bytes received (or stored) do not have the digest the server announced."""

    def __init__(self, remote, algorithm, expected, actual):
        self.remote, self.algorithm = remote, algorithm
        self.expected, self.actual = expected, actual
        super().__init__(
            f"{algorithm} digest mismatch for {remote}: expected {expected}, got {actual}")


class TransferCancelled(ClientError):
    """The caller's cancel flag was raised during a transfer."""


class LocalFileError(ClientError):
    """A local file could not be read or written (the network is not to blame)."""


def describe_error(err):
    """An error in a line: a foreign exception's type is named, our own speak for themselves."""
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if not isinstance(err, ClientError) else text


class Unreachable(Exception):
    """The server at ``url`` did not answer (refused, reset, timed out).

    Not a ClientError: the transport raises it, and the failover loop (or the admin client)
    turns it into the next server or a ClientError of its own.
    """

    def __init__(self, url, cause):
        super().__init__(url)
        self.url, self.cause = url, cause


def not_serving(err):
    """True for a server's answer that it serves nobody now (the next server may)."""
    return isinstance(err, ServerError) and err.status == 503 and err.code in NOT_SERVING_CODES
