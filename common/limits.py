"""What an anonymous client can make a server hold: body sizes, time and connections.

Every HTTP server starts each request with a small body limit (``max_json_body_bytes``): a
JSON route never needs more, and Tornado buffers a non-streamed body whole before any
handler (or authentication) runs. A request that declares a longer body is answered ``413``
before a byte of it is read, unless the route's handler raised the limit after
authenticating the caller (the streaming file handlers do, with ``allow_streamed_body``).
Fellow servers (node certificates, or the debug secret) get ``max_peer_body_bytes`` on
their JSON routes: location batches and challenges can be long.

Time is bounded too: a TLS handshake (``handshake_timeout``), the wait for the next
request's headers (``idle_timeout``) and a small body (``body_timeout``); and so is the
number of open connections (``max_connections``): one more is closed on accept.
"""
import logging
import time
from dataclasses import dataclass

from tornado import gen, httputil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import SSLIOStream, StreamClosedError

from .config import Config
from .direct_bodies import read_bodies_in_place
from .errors import error_body
from .whole_reads import read_whole

log = logging.getLogger("securifile.limits")

# After a 413 the server reads and drops what the client still sends for a moment, so the
# client reads the answer instead of a connection reset (Apache's "lingering close").
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 << 20
# At most one "connection refused" warning per this many seconds: a flood must not flood
# the log as well.
REFUSAL_LOG_INTERVAL = 10.0


@dataclass(frozen=True)
class ServerLimits:
    # The defaults are the configuration's: one place says what they are.
    max_json_body_bytes: int = Config.max_json_body_bytes
    max_peer_body_bytes: int = Config.max_peer_body_bytes
    handshake_timeout: float = Config.handshake_timeout
    idle_timeout: float = Config.idle_timeout
    body_timeout: float = Config.body_timeout
    max_connections: int = Config.max_connections

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.max_json_body_bytes, cfg.max_peer_body_bytes, cfg.handshake_timeout,
                   cfg.idle_timeout, cfg.body_timeout, cfg.max_connections)


def allow_streamed_body(request, max_bytes):
    """Inside a streaming handler, after authentication: accept a body up to ``max_bytes``
    and lift the small-body timeout (the bytes go to disk as they come, not to memory)."""
    request.connection.set_max_body_size(max_bytes)
    request.connection.set_body_timeout(None)


def declared_length(headers):
    """The Content-Length the client announced, or None (absent, chunked or malformed:
    Tornado refuses the malformed ones itself)."""
    value = headers.get("Content-Length", "").split(",")[0].strip()
    return int(value) if value.isdigit() else None


class ConnectionGate:
    """Counts open connections and refuses (closes) any beyond ``max_connections``."""

    def __init__(self, limits, what):
        self.limits = limits
        self.what = what
        self.open = 0
        self.refused = 0
        self._last_warning = 0.0

    def admit(self, stream, address):
        """True if the connection may go on; otherwise it is closed here."""
        if self.open >= self.limits.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_warning > REFUSAL_LOG_INTERVAL:
                self._last_warning = now
                log.warning("%s: %d connections open, the limit: refusing %s (%d refused so far)",
                            self.what, self.open, address and address[0], self.refused)
            stream.close()
            return False
        self.open += 1
        return True

    def closed(self):
        self.open -= 1


def handshake_deadline(stream, seconds):
    """Close ``stream`` unless its TLS handshake completes within ``seconds``; return the
    handshake's future (for a caller that waits for it)."""
    done = stream.wait_for_handshake()
    timer = IOLoop.current().call_later(seconds, stream.close)

    def finished(future):
        IOLoop.current().remove_timeout(timer)
        future.exception()  # a failed handshake is the connection's business, not the log's

    done.add_done_callback(finished)
    return done


class LimitedHTTPServer(HTTPServer):
    """An HTTPServer with ServerLimits; ``is_peer(request)`` says whether the caller (still
    without a body) is a fellow server allowed the larger peer body limit."""

    def initialize(self, request_callback, limits, is_peer=None, **kwargs):
        self.limits = limits
        self.is_peer = is_peer
        self.gate = ConnectionGate(limits, "http")
        super().initialize(request_callback, max_body_size=limits.max_json_body_bytes,
                           idle_connection_timeout=limits.idle_timeout,
                           body_timeout=limits.body_timeout, **kwargs)

    def handle_stream(self, stream, address):
        if self.gate.admit(stream, address):
            read_whole(stream)
            if isinstance(stream, SSLIOStream):
                handshake_deadline(stream, self.limits.handshake_timeout)
            super().handle_stream(stream, address)

    def on_close(self, server_conn):
        super().on_close(server_conn)
        self.gate.closed()

    def start_request(self, server_conn, request_conn):
        read_bodies_in_place(request_conn)
        return _BodyGuard(self, super().start_request(server_conn, request_conn), request_conn)

    def body_limit(self, start_line, headers, conn):
        if self.is_peer is not None:
            request = httputil.HTTPServerRequest(connection=conn, start_line=start_line,
                                                 headers=headers)
            if self.is_peer(request):
                return self.limits.max_peer_body_bytes
        return self.limits.max_json_body_bytes


class _BodyGuard(httputil.HTTPMessageDelegate):
    """Sets each request's body limit before its handler sees it, and answers 413 (then
    closes) when the declared body is still over the limit once the handler has had its
    say, instead of Tornado's bare '400' and a dropped connection."""

    def __init__(self, server, inner, conn):
        self.server = server
        self.inner = inner
        self.conn = conn

    def headers_received(self, start_line, headers):
        self.conn.set_max_body_size(self.server.body_limit(start_line, headers, self.conn))
        length = declared_length(headers)
        future = self.inner.headers_received(start_line, headers)
        if length is None or length <= self.server.limits.max_json_body_bytes:
            return future
        return self._refuse_if_over(future, length, start_line)

    async def _refuse_if_over(self, future, length, start_line):
        if future is not None:
            await future
        # Tornado keeps the limit (raised or not by the handler) in a private attribute.
        limit = getattr(self.conn, "_max_body_size", None)
        if limit is None or length <= limit:
            return
        answered = getattr(self.conn, "_write_finished", False)
        if not answered:
            self.inner.on_connection_close()
        stream = self.conn.detach()
        if not answered:
            log.info("413: %s %s declared %d bytes, over the limit of %d",
                     start_line.method, start_line.path[:200], length, limit)
            body = error_body(413, "too_large",
                              f"request body of {length} bytes is over the limit of {limit} "
                              "bytes for this route and caller").encode()
            head = ("HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            try:
                await stream.write(head + body)
            except StreamClosedError:
                return
        await linger_close(stream)

    def body_sink(self):
        """The streaming handler's sink for a body read in place (``direct_bodies``), if
        it offers one. The handler sits behind Tornado's router (its ``delegate`` once the
        request is routed) in tornado.web's delegate (its ``handler`` once it streams)."""
        routed = getattr(self.inner, "delegate", None)
        offer = getattr(getattr(routed, "handler", None), "body_sink", None)
        return offer() if offer is not None else None

    def data_received(self, chunk):
        return self.inner.data_received(chunk)

    def finish(self):
        return self.inner.finish()

    def on_connection_close(self):
        return self.inner.on_connection_close()


async def linger_close(stream, seconds=LINGER_SECONDS, max_bytes=LINGER_BYTES):
    """Read and drop what the client still sends, for a bounded time and size, then close."""
    deadline = IOLoop.current().time() + seconds
    dropped = 0
    try:
        while dropped < max_bytes:
            chunk = await gen.with_timeout(deadline, stream.read_bytes(64 * 1024, partial=True),
                                           quiet_exceptions=StreamClosedError)
            dropped += len(chunk)
    except (StreamClosedError, TimeoutError):
        pass
    finally:
        stream.close()


def node_callers(authenticator, paths):
    """``is_peer`` for LimitedHTTPServer: requests under ``paths`` from a cluster node."""

    def is_peer(request):
        if not request.path.startswith(paths):
            return False
        try:
            authenticator.node(request)
        except Exception:  # not a node: the small limit, and the handler says why
            return False
        return True

    return is_peer

