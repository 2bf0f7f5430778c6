"""The Verifier against a real HTTP peer on a loopback port: verdicts, catch-up rounds, and
challenges interrupted by a stuck peer (failed) or an unreachable one (abandoned)."""
import asyncio
import hashlib
import json
import os
import socket
import struct

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.testing import bind_unused_port

from securifile.nodes.challenge import answer_challenge, stat_key
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.heartbeat import HeartbeatLoop
from securifile.nodes.locationmap import Location, LocationMap, Replica
from securifile.nodes.peerclient import PeerClient, PeerError
from securifile.nodes.peers import DOWN, FAILED, RUNNING, VERIFYING, PeerTable
from securifile.nodes.refusals import Refusals
from securifile.nodes.verification import ABANDONED, FAILED as OUT_FAILED, PASSED, ROUNDS, \
    UNDECIDED, Verifier

SECRET = "cluster-secret"


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Side:
    """A disk store and a location map: the files one node holds."""

    def __init__(self, root):
        self.store = DiskStore(root)
        self.locations = LocationMap(root / "locations.sqlite3")

    def hold(self, loc, data, version=None):
        fp = loc.file_path
        path = self.store.path_for(fp)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.locations.record_copy(fp, version or loc.version, sha(data), len(data),
                                   stat_key(path))

    def close(self):
        self.locations.close()


class Peer(Side):
    """The returning node: heartbeats, location pulls and challenges as a node answers them.
    ``challenge_mode``: 'answer', 'hang' (never answers) or 'die' (the connection is cut and
    the server stops listening); ``heartbeat_mode``: 'answer' or 'hang'."""

    def __init__(self, root):
        super().__init__(root)
        self.challenge_mode = "answer"
        self.heartbeat_mode = "answer"
        self.verdicts = []
        self.lose_verdicts = False  # the verdict does not get through (a link broken then)
        self.challenges = 0
        self.server = None
        self.port = None
        self.forever = asyncio.Event()

    def app(self):
        peer = self

        class Heartbeat(tornado.web.RequestHandler):
            async def post(self):
                if peer.heartbeat_mode == "hang":
                    await peer.forever.wait()
                self.write({"name": "peer", "status": VERIFYING, "seq": peer.locations.seq})

        class Locations(tornado.web.RequestHandler):
            def get(self):
                since = int(self.get_query_argument("since"))
                self.write({"records": peer.locations.changes_since(since, 1000),
                            "seq": peer.locations.seq, "limit": 1000})

        class Challenge(tornado.web.RequestHandler):
            async def post(self):
                peer.challenges += 1
                if peer.challenge_mode == "hang":
                    await peer.forever.wait()
                if peer.challenge_mode == "die":
                    peer.server.stop()  # nothing listens any more: the next call is refused
                    self.request.connection.stream.close()
                    return
                challenge = json.loads(self.request.body)
                self.write(answer_challenge(peer.store, peer.locations, challenge,
                                            challenger=self.request.headers["X-SecuriFile-Node"]))

        class Verdict(tornado.web.RequestHandler):
            def post(self):
                if peer.lose_verdicts:
                    self.set_status(502)
                    return
                peer.verdicts.append(json.loads(self.request.body)["passed"])
                self.write({})

        return tornado.web.Application([(r"/peer/heartbeat", Heartbeat),
                                        (r"/peer/locations", Locations),
                                        (r"/peer/challenge", Challenge),
                                        (r"/peer/verdict", Verdict)])

    def listen(self):
        self.server = HTTPServer(self.app())
        if self.port is None:
            sock, self.port = bind_unused_port()
            self.server.add_sockets([sock])
        else:
            self.server.add_sockets(bind_sockets(self.port, "127.0.0.1"))
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.forever.set()
        if self.server is not None:
            self.server.stop()


class Me(Side):
    """The challenger: what the Verifier uses of a StorageNode."""

    name = "me"

    def __init__(self, root, url):
        super().__init__(root)
        self.urls = {"peer": url}
        self.peers = PeerTable("me", ["me", "peer"], misses_allowed=3)
        self.refusals = Refusals(self.peers.status, lease=0.0)  # promised nothing
        self.client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=5)
        self.fresh = []

    async def mark_fresh(self, peer, locs):
        self.fresh.extend((peer, loc.path) for loc in locs)


def shared(path, data, version=1, stale=()):
    return Location("alice", path, "me", sha(data), "sha256", len(data), version,
                    [Replica("peer", 1)], 1_700_000_000.0 + version, stale=list(stale))


def scenario(tmp_path, body, timeout=20):
    """Run ``body(me, peer)`` with a listening peer; everything is closed afterwards."""
    async def main():
        peer = Peer(tmp_path / "peer")
        me = Me(tmp_path / "me", peer.listen())
        try:
            await body(me, peer)
        finally:
            peer.stop()
            await me.client.close()
            me.close()
            peer.close()
    asyncio.run(asyncio.wait_for(main(), timeout))


def returning(me):
    """``peer`` answers again after being down: this node starts challenging it."""
    for _ in range(3):
        me.peers.record_miss("peer")
    assert me.peers.record_ack("peer", status=VERIFYING) is True
    assert me.peers.status("peer") == VERIFYING


def test_matching_copies_pass_and_the_peer_is_told(tmp_path):
    async def body(me, peer):
        data = os.urandom(50_000)
        loc = shared("a.bin", data)
        for side in (me, peer):
            side.locations.apply(loc)
            side.hold(loc, data)
        returning(me)
        assert await Verifier(me, timeout=5).run("peer") == PASSED
        assert me.peers.status("peer") == RUNNING and peer.verdicts == [True]
    scenario(tmp_path, body)


def test_a_verdict_that_does_not_get_through_is_followed_by_another_challenge(tmp_path):
    """The peer, still verifying in its own view, would wait for this node's verdict for
    ever (a nemesis run: a link broken for the second the verdict was sent left a restarted
    node verifying until the end)."""
    async def body(me, peer):
        returning(me)
        peer.lose_verdicts = True
        assert await Verifier(me, timeout=5).run("peer") == PASSED
        assert me.peers.status("peer") == RUNNING and peer.verdicts == []
        assert me.peers.record_ack("peer", status=VERIFYING) is True  # challenged again
        peer.lose_verdicts = False
        assert await Verifier(me, timeout=5).run("peer") == PASSED
        assert peer.verdicts == [True]
        assert me.peers.record_ack("peer", status=VERIFYING) is False  # told: no more
    scenario(tmp_path, body)


def test_a_challenge_that_times_out_while_the_peer_answers_heartbeats_fails_it(tmp_path):
    async def body(me, peer):
        data = os.urandom(1000)
        loc = shared("a.bin", data)
        for side in (me, peer):
            side.locations.apply(loc)
            side.hold(loc, data)
        returning(me)
        peer.challenge_mode = "hang"  # stuck on the challenge, alive for heartbeats
        outcome = await Verifier(me, timeout=0.5).run("peer")
        assert outcome == OUT_FAILED and peer.challenges == 1
        assert me.peers.status("peer") == FAILED and peer.verdicts == [False]
        assert me.peers.record_ack("peer", status=VERIFYING) is False  # failed stays failed
    scenario(tmp_path, body)


def test_a_challenge_broken_off_by_an_unreachable_peer_is_abandoned_and_asked_again(tmp_path):
    async def body(me, peer):
        data = os.urandom(1000)
        loc = shared("a.bin", data)
        for side in (me, peer):
            side.locations.apply(loc)
            side.hold(loc, data)
        returning(me)
        peer.challenge_mode = "die"  # the connection is cut, then nothing listens
        assert await Verifier(me, timeout=5).run("peer") == ABANDONED
        assert me.peers.status("peer") == DOWN and peer.verdicts == []
        # It answers again: a new challenge, which passes.
        peer.challenge_mode = "answer"
        peer.listen()
        assert me.peers.record_ack("peer", status=VERIFYING) is True
        assert await Verifier(me, timeout=5).run("peer") == PASSED
        assert me.peers.status("peer") == RUNNING and peer.verdicts == [True]
    scenario(tmp_path, body)


def test_a_timeout_with_heartbeats_unanswered_too_is_abandoned_never_failed(tmp_path):
    """A partition, or a hung peer: nothing answers, so nothing is judged."""
    async def body(me, peer):
        data = os.urandom(1000)
        loc = shared("a.bin", data)
        for side in (me, peer):
            side.locations.apply(loc)
            side.hold(loc, data)
        returning(me)
        peer.challenge_mode = peer.heartbeat_mode = "hang"
        verifier = Verifier(me, timeout=0.5)
        verifier.probe_timeout = 0.5
        assert await verifier.run("peer") == ABANDONED
        assert me.peers.status("peer") == DOWN and peer.verdicts == []
    scenario(tmp_path, body)


def test_a_claimed_newer_version_is_caught_up_then_left_to_its_current_holders(tmp_path):
    """The peer has version 2 (this node missed it and is stale for it): after pulling the
    peer's records, the file is not this node's to judge; the other file still is."""
    async def body(me, peer):
        old, new, other = os.urandom(3000), os.urandom(4000), os.urandom(500)
        v1, v2 = shared("doc", old), shared("doc", new, version=2, stale=["me"])
        v2.origin, v2.replicas = "peer", [Replica("me", 1)]
        me.locations.apply(v1)
        me.hold(v1, old)
        peer.locations.apply(v2)
        peer.hold(v2, new)
        o = shared("other", other)
        for side in (me, peer):
            side.locations.apply(o)
            side.hold(o, other)
        returning(me)
        beats = HeartbeatLoop(me.peers, me.client, me.urls, 1.0, me_apply(me), cursors=me.locations)
        catch_ups = []

        async def catch_up(name):
            catch_ups.append(name)
            await beats.catch_up(name)

        verifier = Verifier(me, timeout=5, catch_up=catch_up)
        assert await verifier.run("peer") == PASSED
        assert catch_ups == ["peer"]  # 'doc' was claimed newer: caught up once
        assert me.locations.get(v1.file_path).version == 2
        assert me.peers.status("peer") == RUNNING and peer.verdicts == [True]
    scenario(tmp_path, body)


def me_apply(me):
    def apply(records):
        for rec in records:
            me.locations.apply(Location.from_json(rec))
    return apply


def test_a_newer_claim_that_catching_up_does_not_settle_leaves_the_peer_verifying(tmp_path):
    async def body(me, peer):
        data = os.urandom(3000)
        loc = shared("doc", data)
        for side in (me, peer):
            side.locations.apply(loc)
        me.hold(loc, data)
        peer.hold(loc, data, version=7)  # its copies table claims a version nobody published
        returning(me)
        catch_ups = []

        async def catch_up(name):
            catch_ups.append(name)

        verifier = Verifier(me, timeout=5, catch_up=catch_up)
        assert await verifier.run("peer") == UNDECIDED
        assert catch_ups == ["peer"] * ROUNDS and peer.challenges == ROUNDS + 1
        assert me.peers.status("peer") == VERIFYING and not me.peers.is_running("peer")
        assert peer.verdicts == []  # no verdict either way
        # The next heartbeat asks again (once), and again it is no pass.
        assert me.peers.record_ack("peer", status=VERIFYING) is True
        assert me.peers.record_ack("peer", status=VERIFYING) is False
        assert await verifier.run("peer") == UNDECIDED
        assert me.peers.status("peer") == VERIFYING
    scenario(tmp_path, body)


def test_a_refusal_is_asked_again_after_the_peer_catches_up(tmp_path):
    """The peer's map does not name this node yet: it refuses; once it has the record, the
    next round is answered."""
    async def body(me, peer):
        data = os.urandom(3000)
        loc = shared("doc", data)
        me.locations.apply(loc)
        me.hold(loc, data)
        foreign = shared("doc", data)
        foreign.origin = "someone-else"
        peer.locations.apply(foreign)
        peer.hold(loc, data)
        returning(me)

        async def peer_pulls(name):  # stands for the peer's own heartbeat pulling our map
            peer.locations.apply(shared("doc", data, version=1))
            newer = shared("doc", data)
            newer.modified += 1
            peer.locations.apply(newer)

        verifier = Verifier(me, timeout=5, catch_up=peer_pulls)
        assert await verifier.run("peer") == PASSED
        assert peer.challenges == 2
    scenario(tmp_path, body)


def test_the_peer_client_tells_an_unreachable_peer_from_a_stuck_one(tmp_path):
    """Refused or reset: unreachable. Accepted and never answered: timed out."""
    async def main():
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=0.5)

        async def stuck(reader, writer):
            await reader.read(1 << 16)
            await asyncio.sleep(5)

        async def resets(reader, writer):
            await reader.read(1 << 16)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()  # linger 0: a reset, not an orderly close

        servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (stuck, resets)]
        try:
            urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers]
            closed = socket.socket()
            closed.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
            closed.close()
            errors = {}
            for name, url in (("stuck", urls[0]), ("reset", urls[1]), ("refused", refused)):
                try:
                    await client.challenge(url, {"nonce": "00", "files": []}, 0.5)
                except PeerError as e:
                    errors[name] = (e.unreachable, e.timed_out)
            assert errors == {"stuck": (False, True), "reset": (True, False),
                              "refused": (True, False)}
        finally:
            for s in servers:
                s.close()
            await client.close()

    asyncio.run(asyncio.wait_for(main(), 20))
