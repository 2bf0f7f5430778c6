"""Bodies read in place (common/direct_bodies.py): a streaming handler that offers a sink
gets a body of known length decrypted straight into the sink's buffer, intact, never as
pieces through ``data_received``; the rest of a body goes there once the sink refuses, and
chunked bodies and handlers without a sink are read as before.

In process: a ``LimitedHTTPServer`` over TLS (as every node and the admin server run); the
client is a blocking TLS socket on a thread of its own.
"""
import asyncio
import fcntl
import hashlib
import os
import socket
import struct
import termios
import threading

import pytest
from tornado import web
from tornado.netutil import bind_sockets

from securifile.common.certnames import ROLE_NODE, CertLayout
from securifile.common.certs import ensure_ca, ensure_server_cert
from securifile.common.limits import LimitedHTTPServer, ServerLimits, allow_streamed_body
from securifile.common.tls import client_context, server_context

WAIT = 30.0
CAPACITY = 64 << 10  # the sink's buffer, reused (a node's is 1 MiB)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    layout = CertLayout(tmp_path_factory.mktemp("certs"))
    ensure_server_cert(layout, ensure_ca(layout), "node1", ROLE_NODE)
    return layout


class Sink:
    """A reused buffer that hashes what is read into it. ``refuse_after``: ``space()`` says
    None once that many bytes came; ``hold``: ``filled`` returns a wait on it once."""

    def __init__(self, refuse_after=None, hold=None):
        self.buffer = memoryview(bytearray(CAPACITY))
        self.at = 0
        self.taken = bytearray()
        self.spaces = 0
        self.refuse_after = refuse_after
        self.hold = hold
        self.held = False  # ``filled`` has returned the wait on ``hold``

    def space(self):
        if self.refuse_after is not None and len(self.taken) >= self.refuse_after:
            return None
        self.spaces += 1
        return self.buffer[self.at:]

    def filled(self, n):
        self.taken += self.buffer[self.at:self.at + n]
        self.at = (self.at + n) % CAPACITY
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.held = True
            return hold.wait()
        return None


@web.stream_request_body
class Receiver(web.RequestHandler):
    def initialize(self, state):
        self.state = state

    def prepare(self):
        allow_streamed_body(self.request, 1 << 30)

    def body_sink(self):
        return self.state["sink"]

    def data_received(self, chunk):
        self.state["pieces"].append(bytes(chunk))

    def put(self):
        self.write({"ok": True})


@web.stream_request_body
class NoSink(Receiver):
    body_sink = None


async def exchange(certs, request, sink=None, path="/f", during=None):
    """Send ``request`` (head and body) from a client thread; (answer, pieces) once the
    answer is read. ``during(server_connections)``, if given, runs on the loop meanwhile."""
    state = {"sink": sink, "pieces": []}
    app = web.Application([(r"/f", Receiver, dict(state=state)),
                           (r"/nosink", NoSink, dict(state=state))])
    ctx = server_context(certs.server_cert("node1"), certs.server_key("node1"), certs.ca_cert)
    http = LimitedHTTPServer(app, ServerLimits(), ssl_options=ctx, chunk_size=256 << 10)
    http.read_chunk_size = 16 << 10  # as a node runs it
    sockets = bind_sockets(0, "127.0.0.1")
    http.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    answer = []

    def client():
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with client_context(certs.ca_cert).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            answer.append(data)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        if during is not None:
            await during(http)
        await asyncio.to_thread(thread.join, WAIT)
    finally:
        http.stop()
    assert answer, "no answer within the deadline"
    return answer[0], state["pieces"]


def put(body, path="/f"):
    return (f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


@pytest.mark.timeout(120)
def test_a_body_of_known_length_is_read_into_the_sink_in_place(certs):
    body = os.urandom((3 << 20) + 12_345)
    sink = Sink()
    answer, pieces = asyncio.run(exchange(certs, put(body), sink))
    assert answer.startswith(b"HTTP/1.1 200")
    assert pieces == []
    assert hashlib.sha256(sink.taken).digest() == hashlib.sha256(body).digest()
    # Each read fills as much of the buffer as was waiting: far fewer than one per record.
    assert len(body) // CAPACITY <= sink.spaces < len(body) // (16 << 10)


@pytest.mark.timeout(120)
def test_once_the_sink_refuses_the_rest_of_the_body_goes_to_data_received(certs):
    body = os.urandom(1 << 20)
    sink = Sink(refuse_after=100_000)
    answer, pieces = asyncio.run(exchange(certs, put(body), sink))
    assert answer.startswith(b"HTTP/1.1 200")
    assert 100_000 <= len(sink.taken) < len(body)
    assert pieces
    assert bytes(sink.taken) + b"".join(pieces) == body


@pytest.mark.timeout(120)
def test_chunked_bodies_and_handlers_without_a_sink_are_read_as_before(certs):
    body = os.urandom(300_000)
    sink = Sink()
    chunked = (b"PUT /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n" + f"{len(body):x}\r\n".encode() + body +
               b"\r\n0\r\n\r\n")
    answer, pieces = asyncio.run(exchange(certs, chunked, sink))
    assert answer.startswith(b"HTTP/1.1 200")
    assert sink.spaces == 0 and b"".join(pieces) == body
    answer, pieces = asyncio.run(exchange(certs, put(body, "/nosink"), sink))
    assert answer.startswith(b"HTTP/1.1 200")
    assert sink.spaces == 0 and b"".join(pieces) == body


@pytest.mark.timeout(120)
def test_the_sink_paces_the_reads(certs):
    """While ``filled``'s awaitable is pending no more of the body is read, however much
    waits in the socket; then the rest arrives intact."""
    body = os.urandom(2 << 20)
    hold = asyncio.Event()
    sink = Sink(hold=hold)

    async def during(http):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        # Once the first read is held, the client's next bytes pile up in the socket.
        while loop.time() < deadline and not (sink.held and _waiting(http, CAPACITY)):
            await asyncio.sleep(0.01)
        assert sink.held, "the first read never came"
        assert _waiting(http, CAPACITY), "the client's bytes never piled up in the socket"
        assert sink.spaces == 1
        hold.set()

    answer, pieces = asyncio.run(exchange(certs, put(body), sink, during=during))
    assert answer.startswith(b"HTTP/1.1 200")
    assert pieces == [] and bytes(sink.taken) == body


def _waiting(http, count):
    """Whether a connection of ``http`` has ``count`` bytes waiting in its socket."""
    for conn in list(http._connections):
        sock = conn.stream.socket
        if sock is not None:
            raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
            if struct.unpack("i", raw)[0] >= count:
                return True
    return False
