"""Streamed bodies are read whole (common/whole_reads.py): a handler gets every byte waiting
in one piece, up to the server's chunk size, and never waits for bytes not yet sent.

In process: a ``LimitedHTTPServer`` over TLS (as every node and the admin server run) with a
streaming handler that records the pieces it is given; the client is a blocking TLS socket
on a thread of its own, so that what it has sent is known when the handler looks.
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

TLS_RECORD = 16 << 10
CHUNK = 256 << 10
WAIT = 30.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    layout = CertLayout(tmp_path_factory.mktemp("certs"))
    ensure_server_cert(layout, ensure_ca(layout), "node1", ROLE_NODE)
    return layout


@web.stream_request_body
class Pieces(web.RequestHandler):
    """Records each piece of the body; waits on ``hold`` (once) before taking more than
    the first, so that the client's bytes pile up in the socket meanwhile."""

    def initialize(self, seen, hold, arrived):
        self.seen, self.hold, self.arrived = seen, hold, arrived

    def prepare(self):
        allow_streamed_body(self.request, 1 << 30)

    async def data_received(self, chunk):
        self.seen.append(bytes(chunk))
        self.arrived.set()
        if len(self.seen) == 1:
            await self.hold.wait()

    def put(self):
        self.write({"pieces": len(self.seen)})


class Server:
    """The server on this test's event loop, and TLS connections to it for a client thread."""

    def __init__(self, layout):
        self.seen = []
        self.hold = asyncio.Event()
        self.arrived = asyncio.Event()
        app = web.Application([(r"/f", Pieces, dict(seen=self.seen, hold=self.hold,
                                                       arrived=self.arrived))])
        ctx = server_context(layout.server_cert("node1"), layout.server_key("node1"),
                             layout.ca_cert)
        self.http = LimitedHTTPServer(app, ServerLimits(), ssl_options=ctx, chunk_size=CHUNK)
        self.http.read_chunk_size = TLS_RECORD  # as a node runs it (nodes/main.py)
        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self.http.add_sockets(sockets)
        self.client_ctx = client_context(layout.ca_cert)

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        return self.client_ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    def stop(self):
        self.http.stop()


def head(length):
    return (f"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n").encode()


def read_answer(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.timeout(120)
def test_bytes_waiting_in_the_socket_reach_the_handler_as_one_piece(certs):
    """While the handler is busy with the first piece, the client sends 48 KiB more (three
    TLS records, all of them in the server's receive buffer before the handler goes on);
    the next piece the handler gets holds all of it. Tornado's own loop hands over one
    record (16 KiB) per piece."""
    body = os.urandom(CHUNK + (192 << 10))
    first, waiting = 1024, 48 << 10

    async def run():
        server = Server(certs)
        sent = threading.Event()
        answer = []

        def client():
            with server.connect() as sock:
                sock.sendall(head(len(body)) + body[:first])
                sent.wait(WAIT)  # the handler has the first piece and waits on hold
                sock.sendall(body[first:first + waiting])
                sent.clear()
                sent.wait(WAIT)
                sock.sendall(body[first + waiting:])
                answer.append(read_answer(sock))

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        try:
            await asyncio.wait_for(server.arrived.wait(), WAIT)
            server.arrived.clear()
            sent.set()
            # Every byte of the second send is in the socket once the peer's TCP stack has
            # it; the handler stays on hold until then (polled, bounded).
            await _wait_until_readable(server, waiting)
            server.hold.set()
            await asyncio.wait_for(server.arrived.wait(), WAIT)
            sent.set()
            await asyncio.to_thread(thread.join, WAIT)
        finally:
            sent.set()
            server.hold.set()
            server.stop()
        return server.seen, answer

    seen, answer = asyncio.run(run())
    assert answer and answer[0].startswith(b"HTTP/1.1 200")
    assert hashlib.sha256(b"".join(seen)).digest() == hashlib.sha256(body).digest()
    assert seen[0] == body[:first]
    assert len(seen[1]) >= waiting, [len(p) for p in seen[:4]]
    assert max(len(p) for p in seen) <= CHUNK


async def _wait_until_readable(server, count, timeout=WAIT):
    """Until the server's connection has ``count`` bytes (and their TLS framing) waiting in
    its kernel receive buffer (``FIONREAD``), or the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        waiting = 0
        for conn in list(server.http._connections):
            sock = conn.stream.socket
            if sock is not None:
                raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
                waiting = max(waiting, struct.unpack("i", raw)[0])
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the client's {count} bytes never reached the server's socket")


@pytest.mark.timeout(120)
def test_a_trickled_body_is_handed_over_as_it_comes(certs):
    """Whole reads never wait for more than is there: ten bytes of a hundred reach the
    handler before the client sends the other ninety (it sends them only then)."""
    async def run():
        server = Server(certs)
        server.hold.set()
        go_on = threading.Event()
        answer = []

        def client():
            with server.connect() as sock:
                sock.sendall(head(100) + b"x" * 10)
                go_on.wait(WAIT)
                sock.sendall(b"y" * 90)
                answer.append(read_answer(sock))

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        try:
            await asyncio.wait_for(server.arrived.wait(), WAIT)
            got_first = list(server.seen)
            go_on.set()
            await asyncio.to_thread(thread.join, WAIT)
        finally:
            go_on.set()
            server.stop()
        return got_first, server.seen, answer

    got_first, seen, answer = asyncio.run(run())
    assert got_first == [b"x" * 10]
    assert b"".join(seen) == b"x" * 10 + b"y" * 90
    assert answer and answer[0].startswith(b"HTTP/1.1 200")
