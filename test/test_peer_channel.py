"""The kept peer channel (``/peer/channel``) between a real PeerClient and a real Tornado
server on a loopback port, with ops made for the test: many calls share one channel and
each gets its own answer, an error comes back with its status, a peer that restarts is
reached on a new channel, a stopped one is unreachable at once, a hung call costs its own
deadline without holding up the others, and a peer without channels is called over HTTP.
The ops a node really serves over it are covered by the cluster tests (every lock and
record goes this way) and test_peer_validation.py (what a node refuses on it)."""
import asyncio
import gc
import json
import logging
import socket
import time

import aiohttp
import tornado.web

from securifile.common.auth import PEER_SECRET_HEADER, Authenticator
from securifile.common.errors import ApiError
from securifile.nodes.channel_frames import join_call
from securifile.nodes.channel_client import Channel, ChannelClosed
from securifile.nodes.channel_handler import ChannelHandler, close_channels
from securifile.nodes.peerclient import PeerClient, PeerError

from .helpers import serve_app

SECRET = "cluster-secret"


class Peer:
    """A test peer: its ops, what they saw, and the channels open to it."""

    def __init__(self):
        self.nodes = {"me"}  # the cluster's node names, as the membership keeps them
        self.seen = []
        self.release = asyncio.Event()
        self.channels = []
        self.http_calls = []

    def ops(self):
        peer = self

        def lock(_node, caller, body):
            peer.seen.append((caller, body["n"]))
            if body.get("refuse"):
                raise ApiError("held by another writer", status=423, code="locked")
            return {"n": body["n"], "caller": caller}

        async def locations(_node, caller, body):
            await peer.release.wait()  # hangs until the test lets it go
            return {"applied": body["n"]}

        return {"lock": lock, "locations": locations}

    def app(self, channels=True):
        peer = self

        class Tracked(ChannelHandler):
            def open(self):
                super().open()
                peer.channels.append(self)

        class Locks(tornado.web.RequestHandler):
            def post(self):
                body = json.loads(self.request.body)
                peer.http_calls.append(body["n"])
                self.write({"n": body["n"], "over": "http"})

        routes = [(r"/peer/locks", Locks)]
        if channels:
            routes.append((r"/peer/channel", Tracked,
                           dict(node=None, ops=self.ops(),
                                authenticator=Authenticator(None, self.nodes, SECRET))))
        return tornado.web.Application(routes)


class Running:
    """A test peer served on a loopback port, and a PeerClient calling it (``url``)."""

    def __init__(self, channels=True):
        self.peer = Peer()
        self.channels = channels

    async def __aenter__(self):
        self.server, self.port = serve_app(self.peer.app(self.channels))
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = PeerClient("me", peer_secret=SECRET, timeout=5)
        return self

    def stop(self):
        """The peer goes away: nothing listens, and its channels close."""
        self.server.stop()
        for channel in self.peer.channels:
            channel.close()

    def start_again(self):
        self.server, _ = serve_app(self.peer.app(self.channels), self.port)

    async def __aexit__(self, *exc):
        await self.client.close()
        self.server.stop()


def lock_body(n, **extra):
    return {"owner": "alice", "path": "f", "n": n, **extra}


def run(coro):
    asyncio.run(asyncio.wait_for(coro, timeout=20))


def test_calls_share_one_channel_and_each_gets_its_own_answer():
    async def scenario():
        async with Running() as r:
            peer, client, url = r.peer, r.client, r.url
            answers = await asyncio.gather(*(client.call_op(url, "lock", lock_body(n))
                                             for n in range(40)))
            assert [a["n"] for a in answers] == list(range(40))
            assert {a["caller"] for a in answers} == {"me"}  # from the opening's headers
            for n in range(40, 60):
                assert (await client.call_op(url, "lock", lock_body(n)))["n"] == n
            assert client.connections_created == 1 and len(peer.channels) == 1
            # Answers go out as written, not held back for the caller's ACK (Nagle's).
            sock = peer.channels[0].ws_connection.stream.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert client.requests == client.channel_calls == 60
            with_error = await asyncio.gather(
                client.call_op(url, "lock", lock_body(60, refuse=True)),
                client.call_op(url, "lock", lock_body(61)), return_exceptions=True)
            assert isinstance(with_error[0], PeerError)
            assert with_error[0].status == 423
            assert with_error[0].body["error"]["code"] == "locked"
            assert with_error[1]["n"] == 61  # the channel carries on after an error
            assert client.connections_created == 1
            # The membership drops this node: its open channel serves it no more.
            peer.nodes.discard("me")
            try:
                await client.call_op(url, "lock", lock_body(62))
                raise AssertionError("a node dropped from the cluster was served")
            except PeerError as e:
                assert (e.status, e.body["error"]["code"]) == (403, "not_a_node")
            assert peer.seen[-1] == ("me", 61)
    run(scenario())


def test_a_restarted_peer_gets_a_new_channel_and_a_stopped_one_is_unreachable():
    async def scenario():
        async with Running() as r:
            client, url = r.client, r.url
            assert (await client.call_op(url, "lock", lock_body(1)))["n"] == 1
            # The peer restarts: its channels close, and a new server listens on the port.
            r.stop()
            r.start_again()
            # The call goes through (on the closed channel first, once more on a new one).
            assert (await client.call_op(url, "lock", lock_body(2)))["n"] == 2
            assert client.connections_created == 2
            # A peer that is gone: unreachable, at once, not after the deadline.
            r.stop()
            started = time.monotonic()
            try:
                await client.call_op(url, "lock", lock_body(3))
                raise AssertionError("a stopped peer answered")
            except PeerError as e:
                assert e.unreachable and not e.timed_out
            assert time.monotonic() - started < 2.0
    run(scenario())


def test_a_dropped_channel_is_replaced_by_the_next_call():
    """What a node does to the channel of a peer back from down (StorageNode.peer_changed)."""
    async def scenario():
        async with Running() as r:
            peer, client, url = r.peer, r.client, r.url
            assert (await client.call_op(url, "lock", lock_body(1)))["n"] == 1
            client.drop_channel(url)
            client.drop_channel("http://127.0.0.1:1")  # none open there: nothing to do
            assert (await client.call_op(url, "lock", lock_body(2)))["n"] == 2
            assert client.connections_created == 2 and len(peer.channels) == 2
            assert (await client.call_op(url, "lock", lock_body(3)))["n"] == 3
            assert client.connections_created == 2
    run(scenario())


def test_a_hung_call_costs_its_own_deadline_and_holds_up_no_other():
    async def scenario():
        async with Running() as r:
            peer, client, url = r.peer, r.client, r.url
            hung = asyncio.ensure_future(client.call_op(url, "locations", {"n": 1}, timeout=1.0))
            started = time.monotonic()
            # Calls sent after it are answered while it waits.
            for n in range(5):
                assert (await client.call_op(url, "lock", lock_body(n)))["n"] == n
            assert not hung.done()
            try:
                await hung
                raise AssertionError("a hung call answered")
            except PeerError as e:
                assert e.timed_out
            assert 0.9 < time.monotonic() - started < 3.0
            # The peer wakes up: its late answer is dropped, and the channel carries on.
            peer.release.set()
            assert (await client.call_op(url, "locations", {"n": 2}))["applied"] == 2
            assert (await client.call_op(url, "lock", lock_body(9)))["n"] == 9
            assert client.connections_created == 1
    run(scenario())


def test_a_peer_without_channels_is_called_over_http():
    async def scenario():
        async with Running(channels=False) as r:
            peer, client, url = r.peer, r.client, r.url
            for n in range(3):
                answer = await client.call_op(url, "lock", lock_body(n))
                assert answer == {"n": n, "over": "http"}
            assert peer.http_calls == [0, 1, 2]
            # Asked for a channel once (a 404), then straight over HTTP.
            assert client.requests == 3 and client.connections_created == 1
    run(scenario())


def test_a_caller_without_the_cluster_secret_gets_no_channel():
    async def scenario():
        async with Running() as r, aiohttp.ClientSession() as session:
            for headers in ({}, {PEER_SECRET_HEADER: "wrong", "X-SecuriFile-Node": "me"}):
                try:
                    async with session.ws_connect(r.url + "/peer/channel", headers=headers):
                        raise AssertionError("a channel opened without the secret")
                except aiohttp.WSServerHandshakeError as e:
                    assert e.status == 403
            assert r.peer.channels == [] and r.peer.seen == []
    run(scenario())


def test_a_malformed_call_gets_a_400_and_the_channel_carries_on():
    async def scenario():
        headers = {PEER_SECRET_HEADER: SECRET, "X-SecuriFile-Node": "me"}
        async with Running() as r, aiohttp.ClientSession() as session:
            async with session.ws_connect(r.url + "/peer/channel", headers=headers) as ws:
                for bad in ("not json", json.dumps({"id": 5, "op": "nope", "body": {}}),
                            json.dumps({"id": 6, "op": "lock", "body": [1]}),
                            b"\x00\x00\x10\x00{}",  # its JSON would run past the end
                            join_call({"id": 7, "op": "lock", "body": {}}, b"x")):
                    await (ws.send_bytes(bad) if isinstance(bad, bytes) else ws.send_str(bad))
                    answer = json.loads((await ws.receive(timeout=5)).data)
                    assert answer["status"] == 400, (bad, answer)
                    assert answer["body"]["error"]["code"] == "bad_message"
                await ws.send_str(json.dumps({"id": 8, "op": "lock", "body": lock_body(8)}))
                answer = json.loads((await ws.receive(timeout=5)).data)
                assert answer == {"id": 8, "status": 200, "body": {"n": 8, "caller": "me"}}
            assert r.peer.seen == [("me", 8)]
    run(scenario())


def test_a_stopping_node_closes_the_channels_its_peers_opened():
    """Tornado's close_all_connections leaves WebSockets open: a lock that came after a
    stopping node closed its location map was answered with an internal error (a nemesis
    run's restart). Now the node closes them first: a call in flight ends unanswered (the
    caller sees the peer unreachable) and one still arriving is not run."""
    async def scenario():
        async with Running() as r:
            peer, client, url = r.peer, r.client, r.url
            assert (await client.call_op(url, "lock", lock_body(1)))["n"] == 1
            in_flight = asyncio.ensure_future(client.call_op(url, "locations", {"n": 2}))
            for _ in range(100):  # until the peer has it
                if peer.channels[0]._tasks:
                    break
                await asyncio.sleep(0.01)
            r.server.stop()  # as the node stops: first no new connection, then these
            close_channels(None)  # the test's handlers serve no node object
            try:
                await in_flight
                raise AssertionError("a call in flight was answered by a stopping node")
            except PeerError as e:
                assert e.unreachable
            peer.channels[0].on_message(json.dumps({"id": 9, "op": "lock",
                                                    "body": lock_body(3)}))
            assert peer.seen == [("me", 1)]
    run(scenario())


def test_a_call_whose_channel_closes_while_it_sends_leaves_no_unretrieved_error(caplog):
    """The channel closed while a call was still being sent: its answer's waiter got the
    close's error, the send failed too, and nobody looked at the first ("Future exception
    was never retrieved", logged as an error in a nemesis run)."""
    class Ws:
        closed = False

        def __init__(self):
            self.sending = asyncio.Event()

        async def send_str(self, message):
            self.sending.set()
            await asyncio.sleep(0.05)
            raise ConnectionResetError("reset while sending")

        def __aiter__(self):
            return self

        async def __anext__(self):
            await asyncio.Event().wait()

    async def scenario():
        ws = Ws()
        channel = Channel(ws)
        call = asyncio.ensure_future(channel.call("lock", {}))
        await ws.sending.wait()
        channel._close(close_ws=False)  # the reader saw the peer go
        try:
            await call
            raise AssertionError("a call on a closed channel was answered")
        except ChannelClosed:
            pass
        channel._reader.cancel()
        del call
        gc.collect()
        await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(scenario())
        gc.collect()
    assert "never retrieved" not in caplog.text
