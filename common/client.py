"""The SecuriFile HTTP client: server failover, redirects to file holders, streamed transfers.

One synchronous client for the CLI, the tests and the TUI's thread workers. It takes the
running servers from the admin server when it knows one (``GET /api/v1/servers``), starts at a
random one, moves on when a server does not answer or says it does not serve now (503
``server_not_running``, ``no_quorum``, ``not_synced``), follows ``307`` to the node that holds
a file (only to servers it knows), and when that holder does not answer or does not serve,
asks again naming it in ``avoid`` so that the node redirects to the next holder. When no
server serves, it asks again with a growing pause for a bounded time. Bodies stream in
chunks both ways, so memory stays flat for any file size.

An instance is safe to share between threads: the server choice is guarded by a lock and
keep-alive connections are kept per thread.
"""
import base64
import hashlib
import http.client
import io
import json
import os
import random
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urljoin, urlsplit

from .digests import ALGORITHMS
from .errors import InvalidPath
from .paths import FilePath, parse_path
from .tls import client_context

CHUNK_SIZE = 1 << 20
# Bodies at least this large wait for "100 Continue", so a redirect or a refusal does not
# cost the upload of the whole file first (Tornado answers before reading the body).
EXPECT_CONTINUE_MIN = 64 << 10
ERROR_BODY_LIMIT = 64 << 10
ERROR_CODE_HEADER = "X-SecuriFile-Error"
DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_STATUSES = (307, 308)
UPLOAD_ALGORITHM = "sha256"
# While the admin server does not answer, ask it again this often for the server list.
ADMIN_RETRY_SECONDS = 5.0
# 503 codes by which a server says that it serves nobody now (it is verifying, failed or
# offline, cut off from the majority, or just restarted and not yet caught up): the next
# server may serve. Other 503s (``no_holder_running``) are about the file, not the server.
NOT_SERVING_CODES = frozenset({"server_not_running", "no_quorum", "not_synced"})
# States in the admin server's list that end on their own, soon (a restart's verification).
COMING_BACK = frozenset({"verifying"})


# --- exceptions -------------------------------------------------------------------------

class ClientError(Exception):
    """Everything the client raises derives from this."""


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
    """429: too many attempts (failed logins); ``details`` may say when to try again."""


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
        detail = "; ".join(f"{url}: {_describe(err)}" for url, err in self.failures)
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
        detail = "; ".join(f"{url}: {_describe(err)}" for url, err in failures)
        super().__init__(failures, f"no server is serving now, still after {waited:g} s of "
                                   f"retrying ({detail or 'no servers'})")


class HolderUnreachable(TransportError):
    """The servers kept naming a holder that does not answer, past the retry budget."""

    def __init__(self, url, error, attempts):
        self.url, self.error, self.attempts = url, error, attempts
        super().__init__(
            f"the server holding the file ({url}) does not answer after {attempts} attempts: "
            f"{_describe(error)}")


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


def _describe(err):
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if not isinstance(err, ClientError) else text


class _Unreachable(Exception):
    """Internal: the server at ``url`` did not answer (refused, reset, timed out)."""

    def __init__(self, url, cause):
        super().__init__(url)
        self.url, self.cause = url, cause


class _TryAgain(Exception):
    """Internal: nothing serves the request now, but something may in a moment (servers
    restarting, a holder being verified); ``error`` is the answer once waiting stops."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def not_serving(err):
    """True for a server's answer that it serves nobody now (the next server may)."""
    return isinstance(err, ServerError) and err.status == 503 and err.code in NOT_SERVING_CODES


class Backoff:
    """Pauses that double from ``first`` up to ``cap``, within ``budget`` seconds in all."""

    def __init__(self, budget, clock, sleep, first=0.25, cap=2.0):
        self.budget, self.clock, self.sleep = budget, clock, sleep
        self.delay, self.cap = first, cap
        self.deadline = None

    def pause(self):
        """Sleep before the next try; False (without sleeping) once the budget is spent."""
        now = self.clock()
        if self.deadline is None:
            self.deadline = now + self.budget
        if now + self.delay > self.deadline:
            return False
        self.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)
        return True


# --- pure helpers -----------------------------------------------------------------------

def parse_remote(remote, *, folder=False):
    """A FilePath from ``owner/path`` (``folder``: ``owner``, ``owner/dir`` or ``owner/dir/``)."""
    try:
        return parse_path(remote, allow_folder=folder)
    except InvalidPath as e:
        raise BadRequest(e.status, e.code, f"{e.message}: {remote!r}") from None


def holder_named(url):
    """The server name a node put in its redirect (``?holder=NAME``), or None."""
    names = parse_qs(urlsplit(url).query).get("holder")
    return names[0] if names else None


def with_avoid(path, avoid):
    """``path`` asking the node to send us to none of the servers named in ``avoid``."""
    if not avoid:
        return path
    return f"{path}{'&' if '?' in path else '?'}avoid={quote(','.join(avoid), safe=',')}"


def file_url_path(remote):
    """The request path for a file, percent-encoded: ``/files/owner/a%20b.txt``."""
    fp = remote if isinstance(remote, FilePath) else parse_remote(remote)
    if not fp.rel:
        raise BadRequest(400, "invalid_path", f"{fp.owner!r} is a folder, not a file")
    return "/files/" + quote(fp.full, safe="/")


def folder_url_path(prefix):
    """The listing path for a folder (always with the trailing slash): ``/files/owner/dir/``."""
    fp = prefix if isinstance(prefix, FilePath) else parse_remote(prefix, folder=True)
    return "/files/" + quote(fp.owner, safe="") + "/" + (quote(fp.rel, safe="/") + "/" if fp.rel else "")


def content_digest(hexdigest, algorithm=UPLOAD_ALGORITHM):
    """An RFC 9530 ``Content-Digest``/``Repr-Digest`` value: ``sha-256=:BASE64:``."""
    token = ALGORITHMS[algorithm][1]
    return f"{token}=:{base64.b64encode(bytes.fromhex(hexdigest)).decode('ascii')}:"


_TOKENS = {token: name for name, (_, token) in ALGORITHMS.items()}


def parse_digest_field(value):
    """``{algorithm: hexdigest}`` from an RFC 9530 digest field; unknown algorithms skipped."""
    found = {}
    for member in (value or "").split(","):
        key, sep, rest = member.strip().partition("=")
        rest = rest.split(";", 1)[0].strip()
        name = _TOKENS.get(key.strip().lower())
        if not sep or name is None or len(rest) < 2 or rest[0] != ":" or rest[-1] != ":":
            continue
        try:
            found[name] = base64.b64decode(rest[1:-1], validate=True).hex()
        except ValueError:
            continue
    return found


def server_origin(url):
    """(scheme, host, port) with defaults filled in and the host lower-cased."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def _base_url(url):
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) server URL: {url!r}")
    return f"{parts.scheme.lower()}://{parts.netloc}"


def _check_cancel(cancel):
    if cancel is None:
        return
    raised = cancel.is_set() if hasattr(cancel, "is_set") else cancel()
    if raised:
        raise TransferCancelled("transfer cancelled")


def _report(progress, done, total):
    if progress is not None:
        progress(done, total)


# --- server choice ----------------------------------------------------------------------

class ServerSelector:
    """The known servers, the one currently in use, and those that recently did not answer.

    Starts at a random server and stays with it until it fails, as the product asks. A server
    that failed is avoided for ``suspect_seconds`` while others are left.
    """

    def __init__(self, urls, *, members=(), allow_empty=False, rng=None, clock=time.monotonic,
                 suspect_seconds=30.0):
        self._lock = threading.Lock()
        self._clock = clock
        self._suspect_seconds = suspect_seconds
        self._suspect_until = {}
        self._rng = rng or random.Random()
        self._urls = []
        self._members = []
        self._current = 0
        if urls or not allow_empty:  # empty: the client waits for the admin server's list
            self.set_servers(urls, members)

    def set_servers(self, urls, members=()):
        """Replace the list (e.g. fresh from the admin server); keep the current one if listed.

        ``members``: other servers of the cluster (down ones, say) that are never picked but
        may be named by a redirect.
        """
        urls = list(dict.fromkeys(_base_url(u) for u in urls))
        if not urls:
            raise ValueError("the client needs at least one server URL")
        members = list(dict.fromkeys([_base_url(u) for u in members] + urls))
        with self._lock:
            current = self._urls[self._current] if self._urls else None
            self._urls, self._members = urls, members
            self._current = urls.index(current) if current in urls else self._rng.randrange(len(urls))

    @property
    def members(self):
        """Every server of the cluster known to the client, usable or not."""
        with self._lock:
            return list(self._members)

    @property
    def servers(self):
        with self._lock:
            return list(self._urls)

    def current(self, exclude=()):
        """The server to talk to: the current one unless excluded or suspect; None if none left."""
        with self._lock:
            now = self._clock()
            n = len(self._urls)
            order = [self._urls[(self._current + i) % n] for i in range(n)]
            candidates = [u for u in order if u not in exclude]
            for url in candidates:
                if self._suspect_until.get(url, 0) <= now:
                    return url
            return candidates[0] if candidates else None

    def failed(self, url):
        """``url`` did not answer: suspect it and, if it was current, move to the next one."""
        origin = server_origin(url)
        with self._lock:
            url = next((u for u in self._urls if server_origin(u) == origin), _base_url(url))
            self._suspect_until[url] = self._clock() + self._suspect_seconds
            if url not in self._urls or self._urls[self._current] != url:
                return
            now = self._clock()
            n = len(self._urls)
            for i in range(1, n):
                candidate = (self._current + i) % n
                if self._suspect_until.get(self._urls[candidate], 0) <= now:
                    self._current = candidate
                    return
            self._current = (self._current + 1) % n

    def answered(self, url):
        """``url`` answered: it is no longer suspect."""
        origin = server_origin(url)
        with self._lock:
            for u in [u for u in self._suspect_until if server_origin(u) == origin]:
                del self._suspect_until[u]

    def is_known(self, url):
        """True if ``url`` is on one of the cluster's servers (scheme, host and port all match)."""
        origin = server_origin(url)
        with self._lock:
            return any(server_origin(u) == origin for u in self._members)


# --- request bodies and responses -------------------------------------------------------

class _FileBody:
    """A request body read from a local file in chunks; re-readable for a retry."""

    def __init__(self, path, size, chunk_size, progress=None, cancel=None, start=0):
        self.path, self.size, self.chunk_size = path, size, chunk_size
        self.progress, self.cancel = progress, cancel
        self.start = start  # the first byte sent (a resumed upload); progress counts from it

    def send(self, conn):
        buf = bytearray(min(self.chunk_size, max(self.size, 1)))
        view = memoryview(buf)
        done = 0
        _report(self.progress, self.start, self.start + self.size)
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise LocalFileError(f"cannot read {self.path}: {e.strerror or e}") from e
        with f:
            f.seek(self.start)
            while done < self.size:
                _check_cancel(self.cancel)
                want = min(len(buf), self.size - done)
                try:
                    n = f.readinto(view[:want])
                except OSError as e:
                    raise LocalFileError(f"cannot read {self.path}: {e.strerror or e}") from e
                if not n:
                    raise LocalFileError(f"{self.path} shrank while it was being uploaded")
                conn.send(view[:n])
                done += n
                _report(self.progress, self.start + done, self.start + self.size)


class _BytesBody:
    """A request body held in memory (small uploads, tests)."""

    def __init__(self, data, chunk_size, progress=None, cancel=None):
        self.data = memoryview(data)
        self.size = len(self.data)
        self.chunk_size, self.progress, self.cancel = chunk_size, progress, cancel

    def send(self, conn):
        _report(self.progress, 0, self.size)
        for start in range(0, self.size, self.chunk_size):
            _check_cancel(self.cancel)
            end = min(start + self.chunk_size, self.size)
            conn.send(self.data[start:end])
            _report(self.progress, end, self.size)


class _PrefixedRaw(io.RawIOBase):
    """Raw stream that first replays bytes already consumed, then reads the socket."""

    def __init__(self, prefix, raw):
        self._prefix = memoryview(prefix)
        self._raw = raw

    def readable(self):
        return True

    def readinto(self, b):
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._raw.readinto(b)

    def close(self):
        self._raw.close()
        super().close()


class _ReplaySocket:
    """Enough of a socket for ``HTTPResponse``: its ``makefile`` replays a status line."""

    def __init__(self, prefix, raw):
        self._prefix, self._raw = prefix, raw

    def makefile(self, mode, *args, **kwargs):
        return io.BufferedReader(_PrefixedRaw(self._prefix, self._raw))


class Response:
    """A server's answer: status, headers and, until released, the body stream."""

    def __init__(self, transport, key, conn, raw, url, reusable=True):
        self._transport, self._key, self._conn = transport, key, conn
        self.raw = raw
        self.url = url
        self.status = raw.status
        self._reusable = reusable

    @property
    def server(self):
        """The base URL of the server that answered."""
        return _base_url(self.url)

    def header(self, name, default=None):
        return self.raw.getheader(name, default)

    def read(self, limit=None):
        return self.raw.read() if limit is None else self.raw.read(limit)

    def json(self):
        try:
            return json.loads(self.raw.read())
        except ValueError as e:
            raise ProtocolError(f"{self.url} answered HTTP {self.status} with invalid JSON") from e
        finally:
            self.release()

    def release(self):
        """Give the connection back for reuse if the body was read, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        raw = self.raw
        try:
            if not raw.isclosed() and raw.length is not None and raw.length <= ERROR_BODY_LIMIT:
                raw.read()
        except (OSError, http.client.HTTPException):
            pass
        if self._reusable and raw.isclosed() and not raw.will_close:
            self._transport._keep(self._key, conn)
        else:
            raw.close()
            conn.close()


# --- transport --------------------------------------------------------------------------

def tls_context(ca=None, cert=None, key=None):
    """A client TLS context: our CA (else the system's), and a client certificate if given."""
    try:
        if ca:
            return client_context(ca, cert, key)
        ctx = ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            ctx.load_cert_chain(str(cert), str(key or cert))
        return ctx
    except (OSError, ssl.SSLError) as e:
        raise TLSFailure(f"cannot load TLS certificates: {e}") from e


def error_from_response(resp):
    """The typed exception for an error response (reads a bounded body, then releases)."""
    try:
        text = resp.raw.read(ERROR_BODY_LIMIT) if resp.raw.length is None or resp.raw.length <= ERROR_BODY_LIMIT else b""
    except (OSError, http.client.HTTPException):
        text = b""
    finally:
        resp.release()
    # HEAD errors (and some proxies) carry no JSON: fall back to the status and the name
    name = unquote(urlsplit(resp.url).path).removeprefix("/files/")
    # HEAD answers have no body: the code comes in a header too
    code = resp.header(ERROR_CODE_HEADER) or DEFAULT_CODES.get(resp.status, f"http_{resp.status}")
    message, details = f"{name}: {resp.raw.reason or 'error'}", {}
    try:
        err = json.loads(text)["error"]
        code = str(err.get("code", code))
        message = str(err.get("message", message))
        details = {k: v for k, v in err.items() if k not in ("code", "message")}
    except (ValueError, KeyError, TypeError, AttributeError):
        if text.strip():
            message = f"{name}: {text.decode('utf-8', 'replace').strip()[:500]}"
    cls = STATUS_ERRORS.get(resp.status, ServerError)
    return cls(resp.status, code, message, url=resp.url, details=details)


class Transport:
    """One request and its response over kept-alive connections (a set per thread).

    The storage client and the admin client share one, and with it the TLS context and the
    connections: a TUI worker thread that lists servers and then downloads pays for one
    handshake per server, not one per call.
    """

    def __init__(self, ssl_context=None, *, timeout=60.0, connect_timeout=5.0):
        self.ssl_context = ssl_context
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._local = threading.local()

    def close(self):
        """Close this thread's idle connections."""
        pool = getattr(self._local, "pool", None) or {}
        for conn in pool.values():
            conn.close()
        pool.clear()

    def exchange(self, method, url, headers, body):
        """One request to one server. Raises _Unreachable if it does not answer."""
        key = server_origin(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pooled = self._pool().pop(key, None)
        for conn in ([pooled] if pooled else []) + [None]:
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect(key)
                early = self._send(conn, method, target, headers, body)
                raw = early or conn.getresponse()
                return Response(self, key, conn, raw, url, reusable=early is None)
            except ClientError:
                if conn is not None:
                    conn.close()
                raise
            except ssl.SSLError as e:
                if conn is not None:
                    conn.close()
                if not isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
                    raise TLSFailure(f"TLS with {_base_url(url)} failed: {e}") from e
                if not reused:
                    raise _Unreachable(url, e) from e
            except (OSError, http.client.HTTPException) as e:
                if conn is not None:
                    conn.close()
                # A kept-alive connection may have been closed by the server meanwhile:
                # try once more on a fresh one before calling the server unreachable.
                if not reused or isinstance(e, TimeoutError):
                    raise _Unreachable(url, e) from e

    def _send(self, conn, method, target, headers, body):
        """Send a request; returns an early final response if the server refused the body."""
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is None:
            if method in ("PUT", "POST"):
                conn.putheader("Content-Length", "0")
            conn.endheaders()
            return None
        conn.putheader("Content-Length", str(body.size))
        expect = body.size >= EXPECT_CONTINUE_MIN
        if expect:
            conn.putheader("Expect", "100-continue")
        conn.endheaders()
        if expect:
            early = _await_continue(conn, method)
            if early is not None:
                return early
        body.send(conn)
        return None

    def _pool(self):
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def _keep(self, key, conn):
        old = self._pool().pop(key, None)
        if old is not None and old is not conn:
            old.close()
        self._pool()[key] = conn

    def _connect(self, key):
        scheme, host, port = key
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.connect_timeout,
                                               context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        conn.connect()
        conn.sock.settimeout(self.timeout)
        return conn


# --- settings ---------------------------------------------------------------------------

def read_token_file(path):
    """The raw token in ``path`` (surrounding whitespace removed)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise LocalFileError(f"cannot read token file {path}: {e.strerror or e}") from e
    if not token:
        raise LocalFileError(f"token file {path} is empty")
    return token


@dataclass
class ClientSettings:
    """Where the servers are and which credentials to present."""

    servers: list
    ca: str = None
    cert: str = None
    key: str = None
    token: str = None
    username: str = None
    admin_url: str = None  # the admin server: the list of running servers comes from it

    @classmethod
    def from_cluster_file(cls, path):
        """Read the launcher's ``cluster.json``; relative paths are relative to that file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise LocalFileError(f"cannot read cluster file {path}: {e.strerror or e}") from e
        except ValueError as e:
            raise LocalFileError(f"cluster file {path} is not valid JSON: {e}") from e
        base = path.resolve().parent

        def local(p):
            return str(base / p) if p else None

        user = data.get("user") or {}
        token_file = local(user.get("token_file"))
        return cls(
            servers=[s["url"] for s in data.get("servers", [])],
            ca=local(data.get("ca_cert")) if data.get("tls", True) else None,
            cert=local(user.get("cert")) if data.get("tls", True) else None,
            key=local(user.get("key")) if data.get("tls", True) else None,
            token=read_token_file(token_file) if token_file and os.path.exists(token_file) else None,
            username=user.get("username"),
            admin_url=(data.get("admin") or {}).get("url"),
        )


def default_login_dir(env=None):
    """``$XDG_CONFIG_HOME/securifile`` or ``~/.config/securifile``; None without a home."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore a relative value
        return Path(xdg) / "securifile"
    home = env.get("HOME")
    return Path(home) / ".config" / "securifile" if home else None


class LoginFolder:
    """What ``securifile login`` keeps: the admin URL, a token, a client key and certificate.

    The folder is 0700 and every file 0600, the key and the token being the user's identity.
    ``login.json`` is written last, so a folder with it holds a complete login.
    """

    LOGIN, TOKEN, KEY, CERT, CA = "login.json", "token", "client.key", "client.crt", "ca.crt"
    FILES = (LOGIN, TOKEN, KEY, CERT, CA)

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def default(cls, env=None):
        """The user's folder, or None when there is no home to keep it in."""
        path = default_login_dir(env)
        return cls(path) if path else None

    def file(self, name):
        return self.path / name

    def exists(self):
        return self.file(self.LOGIN).is_file()

    def read(self):
        """The saved ``login.json``: admin_url, username, servers, and validity dates."""
        path = self.file(self.LOGIN)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise LocalFileError(f"cannot read {path}: {e.strerror or e}") from e
        except ValueError as e:
            raise LocalFileError(f"{path} is not valid JSON ({e}): run 'securifile login' again") from e
        if not isinstance(data, dict) or not data.get("admin_url"):
            raise LocalFileError(f"{path} names no admin server: run 'securifile login' again")
        return data

    def settings(self):
        """ClientSettings for the saved login (servers: the list as of the last login)."""
        info = self.read()

        def present(name):
            return str(self.file(name)) if self.file(name).is_file() else None

        token = present(self.TOKEN)
        cert, key = present(self.CERT), present(self.KEY)
        return ClientSettings(
            servers=[str(u) for u in info.get("servers") or []], ca=present(self.CA),
            cert=cert if key else None, key=key if cert else None,
            token=read_token_file(token) if token else None,
            username=info.get("username"), admin_url=info["admin_url"])

    def save(self, info, token, *, key_pem=None, cert_pem=None, ca_pem=None):
        """Write a login (bytes or text for the PEMs); files a new login lacks are removed."""
        contents = {self.TOKEN: token.strip() + "\n", self.KEY: key_pem, self.CERT: cert_pem,
                    self.CA: ca_pem}
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        for name, data in contents.items():
            if data is None:
                self._unlink(name)
            else:
                self._write(name, data)
        self._write(self.LOGIN, json.dumps(info, indent=2) + "\n")
        _fsync_dir(self.path)

    def remove(self):
        """Delete the saved login; returns the names of the files that were there."""
        gone = [name for name in self.FILES if self._unlink(name)]
        if gone:
            _fsync_dir(self.path)
        return gone

    def _write(self, name, data):
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        target = self.file(name)
        temp = self.path / f".{name}.{os.urandom(4).hex()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise

    def _unlink(self, name):
        try:
            self.file(name).unlink()
            return True
        except FileNotFoundError:
            return False


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the client -------------------------------------------------------------------------

class Client:
    """Talks to the storage nodes of one cluster on behalf of one user.

    ``servers``: base URLs (``https://host:port``). With ``admin_url`` the client asks the
    admin server which of them run (``GET /api/v1/servers``) before the first request and
    every ``server_list_ttl`` seconds, and uses only those; ``servers`` is then the list to
    fall back on while the admin server does not answer (it may be empty). Credentials:
    ``token`` (bearer) and/or a client certificate ``cert``/``key``; ``ca`` is the system's
    CA for HTTPS. ``timeout`` is the longest silence on an open connection,
    ``connect_timeout`` bounds connect and handshake. When a holder named by a redirect does
    not answer, the client asks again naming it in ``avoid``; a node that still names it
    (an older one) is asked again up to ``holder_retries`` times within ``holder_deadline``
    seconds. When every server says it does not serve now, the client asks again with a
    growing pause for up to ``unavailable_wait`` seconds (a cluster restarting, a majority
    forming) before it gives up with ``NoServerServing``.
    """

    def __init__(self, servers, *, ca=None, cert=None, key=None, token=None, admin_url=None,
                 timeout=60.0, connect_timeout=5.0, chunk_size=CHUNK_SIZE, max_redirects=8,
                 holder_retries=20, holder_deadline=20.0, server_list_ttl=30.0,
                 unavailable_wait=15.0, rng=None, clock=time.monotonic, sleep=time.sleep):
        self._configured = list(servers)
        self._selector = ServerSelector(servers, allow_empty=bool(admin_url), rng=rng, clock=clock)
        self._token = token
        self.chunk_size = chunk_size
        self.max_redirects = max_redirects
        self.holder_retries, self.holder_deadline = holder_retries, holder_deadline
        self.unavailable_wait = unavailable_wait
        self._clock, self._sleep = clock, sleep
        urls = self._selector.servers + ([admin_url] if admin_url else [])
        secure = any(u.lower().startswith("https:") for u in urls) or ca or cert
        self._transport = Transport(tls_context(ca, cert, key) if secure else None,
                                    timeout=timeout, connect_timeout=connect_timeout)
        self._admin = None
        if admin_url:
            from .adminclient import AdminClient  # that module builds on this one
            self._admin = AdminClient(admin_url, token=token, transport=self._transport)
        self.server_list_ttl = server_list_ttl
        self._next_refresh = clock()
        self._refresh_lock = threading.Lock()
        # A resumable_client.ResumableUploads: put() then survives broken connections.
        self.resumable = None

    @classmethod
    def from_settings(cls, settings, **kwargs):
        return cls(settings.servers, ca=settings.ca, cert=settings.cert, key=settings.key,
                   token=settings.token, admin_url=settings.admin_url, **kwargs)

    @classmethod
    def from_cluster_file(cls, path, **kwargs):
        return cls.from_settings(ClientSettings.from_cluster_file(path), **kwargs)

    # -- configuration --

    @property
    def servers(self):
        """The servers requests go to (with an admin server: as of its last answer)."""
        return self._selector.servers

    @property
    def current_server(self):
        return self._selector.current()

    @property
    def admin(self):
        """An AdminClient on the same connections and credentials, or None without admin_url."""
        return self._admin

    @property
    def timeout(self):
        return self._transport.timeout

    @property
    def connect_timeout(self):
        return self._transport.connect_timeout

    def set_servers(self, urls, members=()):
        self._selector.set_servers(urls, members)

    def set_token(self, token):
        self._token = token
        if self._admin is not None:
            self._admin.set_token(token)

    def refresh_servers(self):
        """Ask the admin server which servers run and use only those; returns the list.

        Down, failed and offline servers are left out (``NoRunningServer`` if that leaves
        none). If the admin server cannot be asked, the list in use (else the configured
        one) stays; with neither, the admin server's error is raised.
        """
        if self._admin is None:
            return self.servers
        try:
            usable, members = self._admin.storage_servers()
        except NoRunningServer:
            self._next_refresh = self._clock() + min(self.server_list_ttl, ADMIN_RETRY_SECONDS)
            raise
        except ClientError:
            self._next_refresh = self._clock() + min(self.server_list_ttl, ADMIN_RETRY_SECONDS)
            if not self._selector.servers:
                if not self._configured:
                    raise
                self._selector.set_servers(self._configured)
            return self.servers
        self._selector.set_servers(usable, members + self._configured)
        self._next_refresh = self._clock() + self.server_list_ttl
        return self.servers

    def _maybe_refresh(self, force=False):
        """Refresh the server list when it is due; True if this call asked the admin server."""
        if self._admin is None or (not force and self._clock() < self._next_refresh):
            return False
        # One thread asks; the others go on with the list they have, if they have one.
        if not self._refresh_lock.acquire(blocking=not self._selector.servers):
            return False
        try:
            if not force and self._clock() < self._next_refresh:
                return False
            self.refresh_servers()
            return True
        finally:
            self._refresh_lock.release()

    def close(self):
        """Close this thread's idle connections."""
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- files --

    def put(self, local, remote, *, progress=None, cancel=None):
        """Upload a local file to ``owner/path``; returns the server's JSON record.

        The digest is computed in a first pass and sent as ``Content-Digest`` so the server
        can refuse bytes damaged on the way.
        """
        fp = parse_remote(remote)
        local = Path(local)
        try:
            st = local.stat()
            if not local.is_file():
                raise LocalFileError(f"{local} is not a regular file")
            hexdigest = _file_digest(local, UPLOAD_ALGORITHM, self.chunk_size, cancel)
        except OSError as e:
            raise LocalFileError(f"cannot read {local}: {e.strerror or e}") from e
        if self.resumable is not None:
            return self.resumable.put(fp, local, st, hexdigest, progress, cancel)
        body = _FileBody(local, st.st_size, self.chunk_size, progress, cancel)
        return self._put(fp, body, hexdigest)

    def put_bytes(self, data, remote, *, progress=None, cancel=None):
        """Upload ``data`` (bytes) to ``owner/path``; returns the server's JSON record."""
        fp = parse_remote(remote)
        hexdigest = hashlib.new(ALGORITHMS[UPLOAD_ALGORITHM][0], data).hexdigest()
        return self._put(fp, _BytesBody(data, self.chunk_size, progress, cancel), hexdigest)

    def _put(self, fp, body, hexdigest):
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Digest": content_digest(hexdigest)}
        resp = self._checked("PUT", file_url_path(fp), headers=headers, body=body,
                             expected=(200, 201))
        record = resp.json()
        if record.get("algorithm") == UPLOAD_ALGORITHM and record.get("digest") not in (None, hexdigest):
            raise DigestMismatch(fp.full, UPLOAD_ALGORITHM, hexdigest, record["digest"])
        return record

    def download(self, remote, out, *, progress=None, cancel=None, restarted=False,
                 resume=None):
        """Stream ``owner/path`` into the writable binary file ``out``; returns what was read.

        The bytes are checked against ``Repr-Digest``. If the holder dies mid-transfer the
        rest is fetched with ``Range`` from the next holder (from the start if ``out`` is
        seekable and the server cannot resume). ``resume``: ``out`` holds the first
        ``done`` bytes already (dict of done, etag, algorithm, expected digest and the hasher
        over those bytes, see ``resumable_client.continue_download``).
        """
        fp = parse_remote(remote)
        path = file_url_path(fp)
        done, etag, hasher, expected, total = 0, None, None, None, None
        algorithm, info = None, {}
        if resume:
            done, etag, hasher = resume["done"], resume["etag"], resume["hasher"]
            algorithm, expected = resume["algorithm"], resume["expected"]
            info = {"owner": fp.owner, "path": fp.rel, "etag": etag}
        failures = 0
        while True:
            headers = {}
            if done:
                headers["Range"] = f"bytes={done}-"
                if etag:
                    headers["If-Range"] = etag
            resp = self._checked("GET", path, headers=headers, expected=(200, 206))
            try:
                if resp.status == 206:
                    start, total = _content_range(resp.header("Content-Range"))
                    if start != done:
                        raise ProtocolError(f"{resp.url} resumed at byte {start}, not {done}")
                else:
                    if done:
                        _rewind(out, fp.full)
                        done = 0
                    total = resp.raw.length
                    etag = resp.header("ETag")
                    digests = parse_digest_field(resp.header("Repr-Digest"))
                    algorithm = next((a for a in ("sha256", "sha512", "sha3-256", "sha1") if a in digests), None)
                    expected = digests.get(algorithm)
                    hasher = hashlib.new(ALGORITHMS[algorithm][0]) if algorithm else None
                    info = {"owner": fp.owner, "path": fp.rel, "etag": etag,
                            "version": _int_or_none(resp.header("X-SecuriFile-Version"))}
                _report(progress, done, total)
                for n in self._copy_chunks(resp, out, hasher, cancel):
                    done += n
                    _report(progress, done, total)
                if total is not None and done != total:
                    raise http.client.IncompleteRead(b"", total - done)
                info["server"] = resp.server
            except (OSError, http.client.HTTPException) as e:
                # The holder went away mid-body: ask the cluster again for the rest.
                failures += 1
                self._selector.failed(resp.url)
                if failures > self.holder_retries:
                    raise HolderUnreachable(resp.server, e, failures) from e
                continue
            finally:
                resp.release()
            break
        actual = hasher.hexdigest() if hasher else None
        if expected is not None and actual != expected:
            if (failures or resume) and not restarted:
                # A transfer that broke off and resumed elsewhere: the part read before the
                # break may have come from a bad copy (a node breaks a read off when its copy
                # fails the digest); or the partial local file was of other bytes. Read the
                # whole file once more from the start.
                return self.download(remote, _emptied(out, fp.full), progress=progress,
                                     cancel=cancel, restarted=True)
            raise DigestMismatch(fp.full, algorithm, expected, actual)
        info.update(size=done, digest=actual, algorithm=algorithm, verified=expected is not None)
        return info

    def _copy_chunks(self, resp, out, hasher, cancel):
        """Copy the body to ``out`` chunk by chunk, yielding the size of each."""
        buf = bytearray(self.chunk_size)
        view = memoryview(buf)
        while True:
            _check_cancel(cancel)
            n = resp.raw.readinto(buf)
            if not n:
                return
            chunk = view[:n]
            if hasher is not None:
                hasher.update(chunk)
            try:
                while chunk:
                    written = out.write(chunk)
                    chunk = chunk[len(chunk) if written is None else written:]
            except OSError as e:
                raise LocalFileError(f"cannot write: {e.strerror or e}") from e
            yield n

    def get(self, remote, local, *, progress=None, cancel=None):
        """Download ``owner/path`` to the local path ``local``, all or nothing.

        Bytes go to a temp file next to the target, renamed over it only once complete and
        verified; on any error the temp file is removed and the target left untouched.
        """
        with AtomicFile(local) as f:
            info = self.download(remote, f, progress=progress, cancel=cancel)
            f.commit()
        info["local"] = str(local)
        return info

    def get_bytes(self, remote, *, cancel=None):
        """The whole content of ``owner/path`` in memory (small files, tests)."""
        buf = io.BytesIO()
        self.download(remote, buf, cancel=cancel)
        return buf.getvalue()

    def read_range(self, remote, start, length):
        """``length`` bytes from ``start`` (fewer at the end of the file); not digest-checked."""
        if start < 0 or length <= 0:
            raise ValueError("start must be >= 0 and length > 0")
        headers = {"Range": f"bytes={start}-{start + length - 1}"}
        resp = self._checked("GET", file_url_path(parse_remote(remote)), headers=headers,
                             expected=(200, 206))
        try:
            if resp.status == 200:  # the server ignored Range: skip to the part asked for
                resp.raw.read(start)
            return resp.raw.read(length)
        finally:
            resp.release()

    def stat(self, remote):
        """Size, digest, version and ETag of ``owner/path`` from ``HEAD``."""
        fp = parse_remote(remote)
        resp = self._checked("HEAD", file_url_path(fp))
        try:
            digests = parse_digest_field(resp.header("Repr-Digest"))
            algorithm = next(iter(digests), None)
            return {
                "owner": fp.owner, "path": fp.rel,
                "size": _int_or_none(resp.header("Content-Length")),
                "digest": digests.get(algorithm), "algorithm": algorithm,
                "version": _int_or_none(resp.header("X-SecuriFile-Version")),
                "etag": resp.header("ETag"),
                "modified": resp.header("Last-Modified"),
                "server": resp.server,
            }
        finally:
            resp.release()

    def list(self, prefix):
        """Every file under ``owner/dir/`` (recursive), as the servers' JSON records."""
        resp = self._checked("GET", folder_url_path(prefix))
        data = resp.json()
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list):
            raise ProtocolError(f"{resp.url} answered a listing without 'files'")
        return files

    def delete(self, remote):
        """Delete ``owner/path`` everywhere (owner only)."""
        self._checked("DELETE", file_url_path(parse_remote(remote)), expected=(200, 204)).release()

    # -- folders --

    def put_tree(self, local, remote, *, progress=None, cancel=None, on_file=None):
        """Upload a file, or every file under a folder, as ``plan_upload`` maps them.

        ``progress(done, total)`` counts bytes over the whole tree; ``on_file(local, remote,
        record)`` is called after each file. Returns the records.
        """
        plan = plan_upload(local, remote)
        total = sum(size for _, _, size in plan)
        records, base = [], 0
        for local, remote, size in plan:
            per_file = None if progress is None else (lambda d, t, b=base: progress(b + d, total))
            record = self.put(local, remote, progress=per_file, cancel=cancel)
            base += size
            records.append(record)
            if on_file is not None:
                on_file(local, remote, record)
        return records

    def get_tree(self, remote_prefix, local_dir, *, progress=None, cancel=None, on_file=None):
        """Download every file under ``remote_prefix`` into ``local_dir`` (same layout)."""
        plan = plan_download(self.list(remote_prefix), remote_prefix, local_dir)
        total = sum(size for _, _, size in plan)
        results, base = [], 0
        for remote, local, size in plan:
            local.parent.mkdir(parents=True, exist_ok=True)
            per_file = None if progress is None else (lambda d, t, b=base: progress(b + d, total))
            info = self.get(remote, local, progress=per_file, cancel=cancel)
            base += size
            results.append(info)
            if on_file is not None:
                on_file(remote, local, info)
        return results

    # -- servers --

    def status(self, server=None):
        """``GET /status`` of one server (the current one by default), without failover."""
        if server is None:
            self._maybe_refresh()
        base = _base_url(server) if server else self._selector.current()
        if base is None:
            raise NoServerAvailable([])
        try:
            resp = self._exchange("GET", base + "/status", {}, None)
        except _Unreachable as e:
            raise NoServerAvailable([(base, e.cause)]) from e.cause
        if resp.status != 200:
            raise self._error(resp)
        return resp.json()

    def cluster_status(self):
        """``{url: status dict or the error}`` for every server of the cluster, usable or not."""
        try:
            self._maybe_refresh()
        except NoRunningServer:
            pass  # the members are still known; each one's own answer says more
        result = {}
        for url in self._selector.members:
            try:
                result[url] = self.status(url)
            except ClientError as e:
                result[url] = e
        return result

    # -- transport --

    def _headers(self, extra):
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        headers.update(extra or {})
        return headers

    def _checked(self, method, path, *, headers=None, body=None, expected=(200,)):
        resp = self._request(method, path, self._headers(headers), body)
        if resp.status not in expected:
            raise self._error(resp)
        return resp

    def _error(self, resp):
        return error_from_response(resp)

    def _exchange(self, method, url, headers, body):
        """One request to one server. Raises _Unreachable if it does not answer."""
        return self._transport.exchange(method, url, headers, body)

    def _request(self, method, path, headers, body):
        """Send to a server that serves, failing over and following redirects to holders.

        Rounds over the servers are repeated, with a growing pause, while every server that
        answers says it does not serve now, up to ``unavailable_wait`` seconds.
        """
        avoid = []  # holders that did not answer or serve: the nodes send us elsewhere
        backoff = Backoff(self.unavailable_wait, self._clock, self._sleep)
        retrying = False
        while True:
            try:
                return self._request_round(method, path, headers, body, avoid, retrying)
            except _TryAgain as e:
                if not backoff.pause():
                    raise e.error from None
                retrying = True

    def _refresh_for_round(self, retrying):
        """The server list for a round; _TryAgain while the admin server says all the
        servers are on their way back (verifying)."""
        try:
            self._maybe_refresh(force=retrying)
        except NoRunningServer as e:
            if any(s.get("status") in COMING_BACK for s in e.servers):
                raise _TryAgain(NoServerServing([(self._admin.url, e)], self.unavailable_wait)) from None
            if retrying and self._selector.servers:
                return  # servers answered a moment ago: their word beats the admin's lagging list
            raise

    def _request_round(self, method, path, headers, body, avoid, retrying):
        """One pass over the servers. Raises _TryAgain if each one that answered said it
        does not serve now, or a node said the file is served again soon (``Retry-After``);
        NoServerAvailable if no server answered at all."""
        self._refresh_for_round(retrying)
        tried, failures = set(), []
        holder_attempts, delay = 0, 0.25
        deadline = self._clock() + self.holder_deadline
        asked_admin = False
        while True:
            entry = self._selector.current(exclude=tried)
            if entry is None and self._admin is not None and not asked_admin:
                asked_admin = True
                if not self._selector.servers:
                    self.refresh_servers()  # nothing to fall back on: its error is the answer
                else:
                    # Every server we knew failed: the admin server may know newer ones.
                    try:
                        self._maybe_refresh(force=True)
                    except ClientError:
                        pass
                entry = self._selector.current(exclude=tried)
            if entry is None:
                if any(not_serving(err) for _, err in failures):
                    raise _TryAgain(NoServerServing(failures, self.unavailable_wait))
                raise NoServerAvailable(failures)
            try:
                resp = self._follow(method, entry + with_avoid(path, avoid), headers, body)
            except _Unreachable as e:
                if server_origin(e.url) == server_origin(entry):
                    tried.add(entry)
                    failures.append((entry, e.cause))
                    self._selector.failed(entry)
                    continue
                self._selector.failed(e.url)
                holder = holder_named(e.url)
                if holder and holder not in avoid:
                    # Ask again, naming the holder that did not answer: the node sends us to
                    # the next holder at once, without waiting for heartbeats to notice.
                    avoid.append(holder)
                    continue
                # A node that does not take ``avoid`` names it again. The servers notice
                # within a few heartbeats and then name the next holder, so ask, for a while.
                holder_attempts += 1
                if holder_attempts > self.holder_retries or self._clock() + delay > deadline:
                    raise HolderUnreachable(_base_url(e.url), e.cause, holder_attempts) from e.cause
                self._sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if resp.status == 503:
                soon = resp.header("Retry-After") is not None
                err = self._error(resp)
                if not not_serving(err):
                    raise _TryAgain(err) if soon else err
                holder = holder_named(resp.url)
                if server_origin(resp.url) != server_origin(entry) and holder and holder not in avoid:
                    avoid.append(holder)  # the holder it sent us to does not serve now
                    continue
                self._selector.failed(entry)
                tried.add(entry)
                failures.append((entry, err))
                continue
            self._selector.answered(entry)
            return resp

    def _follow(self, method, url, headers, body):
        for _ in range(self.max_redirects + 1):
            resp = self._exchange(method, url, headers, body)
            if resp.status not in REDIRECT_STATUSES:
                return resp
            location = resp.header("Location")
            resp.release()
            if not location:
                raise ProtocolError(f"{url} answered {resp.status} without a Location")
            target = urljoin(url, location)
            if not self._selector.is_known(target):
                raise RedirectRefused(target)
            url = target
        raise TooManyRedirects(f"more than {self.max_redirects} redirects for {method} {url}")


def _await_continue(conn, method):
    """Wait for ``100 Continue``; return the final response instead if one comes first."""
    raw = conn.sock.makefile("rb", buffering=0)  # unbuffered: read no byte past the 100
    line = raw.readline(65537)
    if not line:
        raw.close()
        raise http.client.RemoteDisconnected("connection closed before 100 Continue")
    parts = line.split(None, 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"100":
        while raw.readline(65537) not in (b"\r\n", b"\n", b""):
            pass
        raw.close()
        return None
    resp = http.client.HTTPResponse(_ReplaySocket(line, raw), method=method)
    resp.begin()
    return resp


def _file_digest(path, algorithm, chunk_size, cancel=None):
    h = hashlib.new(ALGORITHMS[algorithm][0])
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            _check_cancel(cancel)
            h.update(view[:n])
    return h.hexdigest()


def _content_range(value):
    """(first byte, total) from ``bytes A-B/T``."""
    try:
        unit, _, spec = (value or "").partition(" ")
        span, _, total = spec.partition("/")
        first = int(span.split("-")[0])
        return first, (None if total == "*" else int(total))
    except ValueError:
        raise ProtocolError(f"bad Content-Range {value!r}") from None


def _emptied(out, name):
    """``out`` emptied for a download from the start (ProtocolError if it cannot be)."""
    _rewind(out, name)
    return out


def _rewind(out, name):
    try:
        out.seek(0)
        out.truncate()
    except (OSError, io.UnsupportedOperation) as e:
        raise ProtocolError(f"cannot resume {name} and cannot restart an unseekable output") from e


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- local files ------------------------------------------------------------------------

class AtomicFile(io.FileIO):
    """A temp file next to ``target`` that replaces it on ``commit()`` and vanishes otherwise."""

    def __init__(self, target):
        self.target = Path(target)
        self.temp = self.target.with_name(f".{self.target.name}.{os.urandom(4).hex()}.part")
        try:
            super().__init__(os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
        except OSError as e:
            raise LocalFileError(f"cannot write {self.target}: {e.strerror or e}") from e
        self._committed = False

    def commit(self):
        try:
            os.fsync(self.fileno())
            super().close()
            os.replace(self.temp, self.target)
        except OSError as e:
            raise LocalFileError(f"cannot write {self.target}: {e.strerror or e}") from e
        self._committed = True

    def close(self):
        super().close()
        if not self._committed:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass

    def __exit__(self, *exc):
        self.close()


def plan_upload(local, remote):
    """[(local file, remote path, size)] for ``put LOCAL REMOTE``.

    A file goes to REMOTE (or REMOTE/<name> if REMOTE is a folder: ``owner`` or ends in '/').
    A folder's files go to REMOTE/<relative path>. Every remote name is checked up front.
    """
    local = Path(local)
    if local.is_dir():
        base = parse_remote(remote, folder=True)
        plan = []
        for dirpath, dirnames, filenames in os.walk(local):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if not path.is_file():
                    continue
                rel = path.relative_to(local).as_posix()
                target = f"{base.full.rstrip('/')}/{rel}"
                plan.append((path, parse_remote(target).full, path.stat().st_size))
        return plan
    if not local.is_file():
        raise LocalFileError(f"{local}: no such file or folder")
    if remote.endswith("/") or "/" not in remote:
        base = parse_remote(remote, folder=True)
        remote = f"{base.full.rstrip('/')}/{local.name}"
    return [(local, parse_remote(remote).full, local.stat().st_size)]


def plan_download(files, prefix, local_dir):
    """[(remote path, local path, size)] for the listing ``files`` of folder ``prefix``.

    Names come from a server, so each one is checked again: nothing may land outside
    ``local_dir``.
    """
    base = parse_remote(prefix, folder=True)
    lead = f"{base.full.rstrip('/')}/"
    root = Path(local_dir)
    plan = []
    for record in files:
        fp = parse_remote(f"{record['owner']}/{record['path']}")
        if not fp.full.startswith(lead):
            raise ProtocolError(f"listing of {lead} returned {fp.full}, outside the folder")
        rel = fp.full[len(lead):]
        plan.append((fp.full, root.joinpath(*rel.split("/")), int(record.get("size") or 0)))
    return sorted(plan)


__all__ = [
    "Client", "ClientSettings", "LoginFolder", "ServerSelector", "Transport", "Response",
    "AtomicFile", "tls_context", "error_from_response", "default_login_dir",
    "ClientError", "ServerError", "BadRequest", "Unauthorized", "PermissionDenied",
    "FileNotFound", "PathConflict", "FileLocked", "RateLimited", "NoHolderAvailable",
    "StorageFull", "TransportError", "NoServerAvailable", "NoRunningServer", "NoServerServing",
    "HolderUnreachable", "NOT_SERVING_CODES", "not_serving", "holder_named", "with_avoid",
    "RedirectRefused", "TooManyRedirects", "TLSFailure", "ProtocolError", "DigestMismatch", "TransferCancelled", "LocalFileError",
    "parse_remote", "file_url_path", "folder_url_path", "content_digest", "parse_digest_field",
    "server_origin", "read_token_file", "plan_upload", "plan_download",
]
