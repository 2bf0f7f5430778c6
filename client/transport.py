"""One HTTP request to one server over kept-alive connections, and its response.

Written over ``http.client``: a pool of connections per thread and per server, request
bodies sent in chunks with progress and cancel, and ``Expect: 100-continue`` for large
bodies so that a redirect or a refusal does not cost the upload of the whole file first.
A server that does not answer raises ``Unreachable``; an answer is a ``Response`` whatever
its status (``error_from_response`` makes the typed exception of an error answer).
"""
import http.client
import io
import json
import ssl
import threading
from urllib.parse import unquote, urlsplit

from securifile.common.tls import client_context

from .errors import (
    DEFAULT_CODES, STATUS_ERRORS, ClientError, LocalFileError, ProtocolError, ServerError,
    TLSFailure, TransferCancelled, Unreachable,
)
from .servers import base_url, server_origin

CHUNK_SIZE = 1 << 20
# Bodies at least this large wait for "100 Continue", so a redirect or a refusal does not
# cost the upload of the whole file first (Tornado answers before reading the body).
EXPECT_CONTINUE_MIN = 64 << 10
ERROR_BODY_LIMIT = 64 << 10
ERROR_CODE_HEADER = "X-SecuriFile-Error"


# --- request bodies ---------------------------------------------------------------------

def check_cancel(cancel):
    """TransferCancelled if ``cancel`` (an Event, or a callable) is raised."""
    if cancel is None:
        return
    raised = cancel.is_set() if hasattr(cancel, "is_set") else cancel()
    if raised:
        raise TransferCancelled("transfer cancelled")


def report_progress(progress, done, total):
    """Call ``progress(done, total)`` if the caller gave one."""
    if progress is not None:
        progress(done, total)


class FileBody:
    """A request body read from a local file in chunks; re-readable for a retry."""

    def __init__(self, path, size, chunk_size, progress=None, cancel=None, start=0):
        self.path, self.size, self.chunk_size = path, size, chunk_size
        self.progress, self.cancel = progress, cancel
        self.start = start  # the first byte sent (a resumed upload); progress counts from it

    def send(self, conn):
        buf = bytearray(min(self.chunk_size, max(self.size, 1)))
        view = memoryview(buf)
        done = 0
        report_progress(self.progress, self.start, self.start + self.size)
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise LocalFileError(f"cannot read {self.path}: {e.strerror or e}") from e
        with f:
            f.seek(self.start)
            while done < self.size:
                check_cancel(self.cancel)
                want = min(len(buf), self.size - done)
                try:
                    n = f.readinto(view[:want])
                except OSError as e:
                    raise LocalFileError(f"cannot read {self.path}: {e.strerror or e}") from e
                if not n:
                    raise LocalFileError(f"{self.path} shrank while it was being uploaded")
                conn.send(view[:n])
                done += n
                report_progress(self.progress, self.start + done, self.start + self.size)


class BytesBody:
    """A request body held in memory (small uploads, tests)."""

    def __init__(self, data, chunk_size, progress=None, cancel=None):
        self.data = memoryview(data)
        self.size = len(self.data)
        self.chunk_size, self.progress, self.cancel = chunk_size, progress, cancel

    def send(self, conn):
        report_progress(self.progress, 0, self.size)
        for start in range(0, self.size, self.chunk_size):
            check_cancel(self.cancel)
            end = min(start + self.chunk_size, self.size)
            conn.send(self.data[start:end])
            report_progress(self.progress, end, self.size)


# --- responses ------------------------------------------------------------------------

class Response:
    """A server's answer: status, headers and, until released, the body stream."""

    def __init__(self, transport, key, conn, raw, url, reusable=True):
        self._transport, self._key, self._conn = transport, key, conn
        self.raw = raw
        self.url = url
        self.status = raw.status
        self._reusable = reusable
        # Set by ClusterClient: a server this request went to first did not answer.
        self.after_lost_request = False

    @property
    def server(self):
        """The base URL of the server that answered."""
        return base_url(self.url)

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


# --- the transport --------------------------------------------------------------------

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
        """One request to one server. Raises Unreachable if it does not answer."""
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
                    raise TLSFailure(f"TLS with {base_url(url)} failed: {e}") from e
                if not reused:
                    raise Unreachable(url, e) from e
            except (OSError, http.client.HTTPException) as e:
                if conn is not None:
                    conn.close()
                # A kept-alive connection may have been closed by the server meanwhile:
                # try once more on a fresh one before calling the server unreachable.
                if not reused or isinstance(e, TimeoutError):
                    raise Unreachable(url, e) from e

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


# --- Expect: 100-continue ------------------------------------------------------------

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


class ConnectionsOwner:
    """For a client over a ``Transport`` in ``self._transport``: ``close()`` and ``with``."""

    def close(self):
        """Close this thread's idle connections."""
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
