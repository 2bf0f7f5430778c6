"""The peer client's kept connections against a real Tornado peer on a loopback port: calls
reuse one connection, a peer that restarted is reached again on a new one, a hung peer
costs a call its deadline and no more, and a stopped one is unreachable."""
import asyncio
import time

import tornado.web

from securifile.nodes.peerclient import PeerClient, PeerError

from .helpers import serve_app

SECRET = "cluster-secret"


class Beat(tornado.web.RequestHandler):
    def initialize(self, answered, hang):
        self.answered, self.hang = answered, hang

    async def post(self):
        if self.hang:
            await asyncio.sleep(5)
        self.answered.append(self.request.connection.stream.socket.fileno())
        self.write({"name": "peer", "status": "running", "seq": 0})


async def serve(port=None, hang=False):
    answered = []
    app = tornado.web.Application([(r"/peer/heartbeat", Beat, dict(answered=answered,
                                                                   hang=hang))])
    server, port = serve_app(app, port)
    return server, port, answered


async def stop(server):
    server.stop()
    await server.close_all_connections()


def run(coro):
    asyncio.run(asyncio.wait_for(coro, timeout=20))


def test_calls_share_one_kept_connection_and_a_restarted_peer_gets_a_new_one():
    async def scenario():
        client = PeerClient("me", peer_secret=SECRET, timeout=2)
        server, port, answered = await serve()
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(20):
                assert (await client.heartbeat(url, 2))["status"] == "running"
            assert client.stats() == {"connections_created": 1, "requests": 20,
                                      "channel_calls": 0}
            assert len(answered) == 20
            # The peer restarts: the kept connection is dead; the call goes through anyway,
            # on a new connection, and is counted once.
            await stop(server)
            server, _, answered = await serve(port)
            assert (await client.heartbeat(url, 2))["status"] == "running"
            assert len(answered) == 1
            assert client.connections_created == 2
            # A peer that is gone: unreachable, at once.
            await stop(server)
            started = time.monotonic()
            try:
                await client.heartbeat(url, 2)
                raise AssertionError("a stopped peer answered")
            except PeerError as e:
                assert e.unreachable and not e.timed_out
            assert time.monotonic() - started < 1.5
        finally:
            server.stop()
            await client.close()
    run(scenario())


def test_a_hung_peer_costs_a_call_its_deadline_and_the_connection_is_replaced():
    async def scenario():
        client = PeerClient("me", peer_secret=SECRET, timeout=2)
        hung, hung_port, _ = await serve(hang=True)
        server, port, answered = await serve()
        try:
            assert (await client.heartbeat(f"http://127.0.0.1:{port}", 2))["seq"] == 0
            started = time.monotonic()
            try:
                await client.heartbeat(f"http://127.0.0.1:{hung_port}", 0.3)
                raise AssertionError("a hung peer answered")
            except PeerError as e:
                assert e.timed_out and not e.unreachable
            assert 0.25 < time.monotonic() - started < 1.0
            # The hung call's connection is not handed to the next call to that peer.
            try:
                await client.heartbeat(f"http://127.0.0.1:{hung_port}", 0.3)
            except PeerError as e:
                assert e.timed_out
            assert client.connections_created == 3
            # Other peers are not held up by it.
            assert (await client.heartbeat(f"http://127.0.0.1:{port}", 2))["seq"] == 0
            assert len(answered) == 2 and client.connections_created == 3
        finally:
            server.stop()
            await stop(hung)
            await client.close()
    run(scenario())
