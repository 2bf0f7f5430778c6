"""Peer bookkeeping, and the heartbeat loop against a real Tornado peer on a loopback port."""
import asyncio
import contextlib
import json
import socket

import pytest
import tornado.web

from securifile.common.auth import PEER_SECRET_HEADER
from securifile.common.errors import Forbidden
from securifile.nodes.heartbeat import HeartbeatLoop
from securifile.nodes.locationmap import Location, LocationMap, Replica
from securifile.nodes.peerclient import PeerClient, PeerError
from securifile.nodes.peers import DOWN, FAILED, RUNNING, VERIFYING, PeerTable
from securifile.nodes.pushed import PushedSpans
from securifile.nodes.quorum import Quorum

from .fakes import Clock
from .helpers import serve_app
from .memory_cluster import MemoryCluster

SECRET = "cluster-secret"


@pytest.fixture
def changes():
    return []


@pytest.fixture
def table(changes):
    clock = Clock()
    t = PeerTable("n1", ["n1", "n2", "n3"], misses_allowed=3, clock=clock,
                  on_change=lambda *change: changes.append(change[:3]))
    t.test_clock = clock
    return t


# -- PeerTable ----------------------------------------------------------------------------

def test_peers_start_running_and_exclude_self(table, changes):
    assert table.names == ["n2", "n3"]
    assert table.running_peers() == ["n2", "n3"]
    assert table.status("n2") == RUNNING and table.since("n2") == 1000.0
    assert table.status("n9") == DOWN  # a stranger is never a target
    assert not table.is_running("n9")
    assert changes == []


def test_a_peer_is_doubted_while_down_and_for_a_window_after_a_missed_beat(table):
    """A peer this node does not hear may be writing without it: doubted when seen down,
    and for ``window`` seconds after any missed beat, answered since or not."""
    assert table.doubted(10.0) == set()
    table.record_miss("n2", sent=1000.0)  # one miss: still running
    assert table.status("n2") == RUNNING and table.doubted(10.0) == {"n2"}
    table.record_ack("n2", sent=1001.0)
    table.test_clock.now = 1009.0
    assert table.doubted(10.0) == {"n2"}  # it may count this node down a while yet
    table.test_clock.now = 1010.5
    assert table.doubted(10.0) == set()
    for _ in range(3):
        table.record_miss("n3", sent=900.0)  # down, missed long ago: doubted all the same
    assert table.status("n3") == DOWN and table.doubted(10.0) == {"n3"}


def test_a_peer_down_that_every_voter_promised_to_refuse_is_not_doubted(table):
    """It cannot reach a majority (nodes/refusals.py): doubted again once the promise runs
    out or is not renewed; a peer only missed, or promised by some voters only, stays
    doubted; so does one with no voter at all to promise."""
    for _ in range(3):
        table.record_miss("n3", sent=1000.0)
    assert table.doubted(10.0) == {"n3"}
    table.note_promise("n2", {"peers": ["n3"], "for": 3.0}, sent=1000.0)
    assert table.doubted(10.0) == set()
    table.test_clock.now = 1003.0
    assert table.doubted(10.0) == {"n3"}  # run out
    table.note_promise("n2", {"peers": ["n3"], "for": 3.0}, sent=1002.5)
    assert table.doubted(10.0) == set()
    table.note_promise("n2", None, sent=1002.8)  # no longer promised (n2 hears n3 again)
    assert table.doubted(10.0) == {"n3"}
    table.note_promise("n2", {"peers": ["n3"], "for": "a while"}, sent=1003.0)  # malformed
    assert table.doubted(10.0) == {"n3"}

    big = PeerTable("n1", ["n1", "n2", "n3", "n4"], misses_allowed=1, clock=lambda: 1000.0)
    big.record_miss("n4", sent=1000.0)
    big.note_promise("n2", {"peers": ["n4"], "for": 3.0}, sent=1000.0)
    assert big.doubted(10.0) == {"n4"}  # n3 has promised nothing
    big.note_promise("n3", {"peers": ["n4"], "for": 3.0}, sent=1000.0)
    assert big.doubted(10.0) == set()
    big.record_miss("n2", sent=1000.0)  # down too: n3, the one voter left, promised n4 only
    assert big.doubted(10.0) == {"n2"}

    lone = PeerTable("n1", ["n1", "n2"], misses_allowed=1, clock=lambda: 1000.0)
    lone.record_miss("n2", sent=1000.0)
    assert lone.doubted(10.0) == {"n2"}  # no voter left to promise anything


def test_misses_turn_a_peer_down_after_the_allowed_number(table, changes):
    table.record_miss("n2")
    table.record_miss("n2")
    assert table.status("n2") == RUNNING and changes == []
    table.test_clock.now = 1005.0
    table.record_miss("n2")
    assert table.status("n2") == DOWN
    assert changes == [("n2", RUNNING, DOWN)]
    assert table.since("n2") == 1005.0
    assert table.running_peers() == ["n3"]
    table.record_miss("n2")
    table.record_miss("n2")
    assert changes == [("n2", RUNNING, DOWN)]  # reported once, not per miss
    assert table.status("n3") == RUNNING


def test_an_ack_from_a_down_peer_starts_a_challenge_and_resets_the_count(table, changes):
    for _ in range(3):
        table.record_miss("n3")
    table.test_clock.now = 1010.0
    assert table.record_ack("n3", seq=5) is True  # challenge it
    assert table.status("n3") == VERIFYING and table.since("n3") == 1010.0
    assert not table.is_running("n3")  # never a redirect target before it passes
    assert table.record_ack("n3", seq=5) is False  # one challenge at a time
    table.challenge_done("n3", True)
    assert table.status("n3") == RUNNING
    assert changes == [("n3", RUNNING, DOWN), ("n3", DOWN, VERIFYING), ("n3", VERIFYING, RUNNING)]
    table.record_miss("n3")
    table.record_miss("n3")
    table.record_ack("n3")
    table.record_miss("n3")
    table.record_miss("n3")
    assert table.status("n3") == RUNNING  # never three in a row
    assert len(changes) == 3


def test_a_failed_challenge_keeps_the_peer_failed_until_it_has_been_down(table):
    for _ in range(3):
        table.record_miss("n2")
    assert table.record_ack("n2", boot="b1")
    table.challenge_done("n2", False, "1 corrupt")
    assert table.status("n2") == FAILED
    assert table.record_ack("n2", boot="b1") is False  # heartbeats go on; still failed
    assert table.status("n2") == FAILED
    for _ in range(3):  # taken offline: it stops answering
        table.record_miss("n2")
    assert table.status("n2") == DOWN
    assert table.record_ack("n2", boot="b1") is True  # back online: verified again
    assert table.status("n2") == VERIFYING


def test_a_restart_seen_by_a_new_boot_id_is_challenged(table):
    assert table.record_ack("n2", boot="b1") is False
    assert table.record_ack("n2", boot="b2") is True
    assert table.status("n2") == VERIFYING


def test_a_peer_that_says_it_is_verifying_is_challenged_once_per_boot(table):
    assert table.record_ack("n2", boot="b1", status=VERIFYING) is True
    table.challenge_done("n2", True)
    assert table.record_ack("n2", boot="b1", status=VERIFYING) is False
    assert table.status("n2") == RUNNING


def test_a_peer_being_verified_is_coming_back_until_it_says_it_runs(table):
    assert not table.coming_back("n2")
    table.record_ack("n2", boot="b1", status=VERIFYING)  # this node challenges it
    assert table.coming_back("n2") and not table.is_running("n2")
    table.challenge_done("n2", True)  # passed here; others still check it
    assert table.status("n2") == RUNNING and table.coming_back("n2") and not table.is_running("n2")
    table.record_ack("n2", boot="b1", status=RUNNING)
    assert table.is_running("n2") and not table.coming_back("n2")
    table.record_ack("n3", boot="c1", status=VERIFYING)
    table.challenge_done("n3", False)
    assert not table.coming_back("n3")  # failed: not soon
    assert not table.coming_back("n9")


def test_a_returning_node_runs_once_every_reachable_peer_passed_it(changes):
    now = [100.0]
    t = PeerTable("a", ["a", "b", "c"], self_status=VERIFYING, clock=lambda: now[0],
                  on_change=lambda *c: changes.append(c[:3]))
    t.note_challenge("b", 0)
    now[0] = 101.0
    t.receive_verdict("b", True)
    assert t.self_status == VERIFYING  # c has not judged yet
    for _ in range(3):
        t.record_miss("c", sent=100.5)  # c is down, as far as beats sent before it tell
    assert t.status("c") == DOWN and t.self_status == VERIFYING
    t.record_ack("b", sent=100.8)  # b may have written without this node after this beat
    assert t.self_status == VERIFYING
    t.record_ack("b", sent=101.5)  # b's records pulled after its verdict
    assert t.self_status == VERIFYING  # c may be back already (a healed partition)
    t.record_miss("c", sent=101.6)  # a beat after the verdict missed: c cannot judge
    assert t.self_status == RUNNING
    assert ("a", VERIFYING, RUNNING) in changes


def test_a_peer_seen_down_that_answers_after_the_first_verdict_judges_too():
    """A nemesis run: a partition healed, one peer passed the returning node, and the node
    ran while the other, still counting it down, wrote a file it then answered 404 for."""
    now = [100.0]
    t = PeerTable("a", ["a", "b", "c"], self_status=VERIFYING, clock=lambda: now[0])
    for _ in range(3):
        t.record_miss("c", sent=99.0)
    t.note_challenge("b", 0)
    t.receive_verdict("b", True)
    now[0] = 100.5
    t.record_ack("b", sent=100.2)
    assert t.self_status == VERIFYING
    assert t.record_ack("c", sent=100.3) is True  # c is back: it is challenged, and judges
    assert t.status("c") == VERIFYING and t.self_status == VERIFYING
    t.note_challenge("c", 0)
    now[0] = 101.0
    t.receive_verdict("c", True)
    assert t.self_status == VERIFYING  # what c wrote before it judged is not pulled yet
    t.record_ack("c", sent=101.2)
    assert t.self_status == RUNNING


def test_one_failing_verdict_fails_the_returning_node():
    t = PeerTable("a", ["a", "b", "c"], self_status=VERIFYING)
    t.note_challenge("b", 0)
    t.receive_verdict("b", True)
    t.note_challenge("c", 2)
    t.receive_verdict("c", False, "2 corrupt")
    assert t.self_status == FAILED


def test_a_verdict_needs_a_recent_challenge_and_a_failing_one_a_copy_in_common():
    now = [1000.0]
    t = PeerTable("a", ["a", "b", "c"], self_status=VERIFYING, clock=lambda: now[0])
    for passed in (True, False):
        with pytest.raises(Forbidden):
            t.receive_verdict("b", passed)  # never challenged
    t.note_challenge("b", 0)
    with pytest.raises(Forbidden):
        t.receive_verdict("b", False)  # asked about nothing they hold together
    t.note_challenge("b", 0)
    t.note_challenge("b", 3)  # a challenge in batches: the copies add up
    now[0] += t.verdict_window + 1
    with pytest.raises(Forbidden):
        t.receive_verdict("b", False)  # too long ago
    t.note_challenge("b", 3)
    t.receive_verdict("b", False, "1 corrupt")
    assert t.self_status == FAILED
    with pytest.raises(Forbidden):
        t.receive_verdict("b", False)  # one verdict per challenge


def test_one_miss_allowed(changes):
    t = PeerTable("a", ["a", "b"], misses_allowed=1, on_change=lambda *c: changes.append(c[:3]))
    t.record_miss("b")
    assert t.status("b") == DOWN and changes == [("b", RUNNING, DOWN)]


def test_self_status_is_reported_for_the_own_name(table):
    assert table.status("n1") == RUNNING and table.is_running("n1")
    table.self_status = "offline"
    assert table.status("n1") == "offline"
    assert not table.is_running("n1")
    assert "n1" not in table.running_peers()


def test_snapshot(table):
    table.test_clock.now = 1001.0
    for _ in range(3):
        table.record_miss("n3")
    assert table.snapshot() == [{"name": "n2", "status": RUNNING, "since": 1000.0},
                                {"name": "n3", "status": DOWN, "since": 1001.0}]


# -- HeartbeatLoop against a real HTTP peer -----------------------------------------------

class FakePeer:
    """Answers /peer/heartbeat and /peer/locations as a node does, from a real LocationMap."""

    def __init__(self, locations, page_limit):
        self.locations = locations
        self.page_limit = page_limit
        self.beats = []   # X-SecuriFile-Node of each heartbeat
        self.downs = []   # whether each heartbeat said the caller counts this peer down
        self.pulls = []   # 'since' of each pull
        self.own = None  # [base, value] of its own record numbers, when it tells them

    def app(self):
        peer = self

        class Base(tornado.web.RequestHandler):
            def prepare(self):
                if self.request.headers.get(PEER_SECRET_HEADER) != SECRET:
                    raise tornado.web.HTTPError(403)

        class Heartbeat(Base):
            def post(self):
                body = json.loads(self.request.body)
                peer.beats.append((self.request.headers.get("X-SecuriFile-Node"), body["from"]))
                peer.downs.append(body.get("down", False))
                self.write({"name": "peer", "status": RUNNING, "seq": peer.locations.seq,
                            "boot": "boot-1"})

        class Locations(Base):
            def get(self):
                since = int(self.get_query_argument("since"))
                limit = min(int(self.get_query_argument("limit", "1000")), peer.page_limit)
                peer.pulls.append(since)
                known = {}
                for item in self.get_query_arguments("known"):
                    name, lo, hi = item.rsplit(":", 2)
                    known[name] = (int(lo), int(hi))
                answer = {"records": peer.locations.changes_since(since, limit, known),
                          "seq": peer.locations.seq, "limit": limit}
                if peer.own is not None:
                    answer["own"] = peer.own
                self.write(answer)

        return tornado.web.Application([(r"/peer/heartbeat", Heartbeat),
                                        (r"/peer/locations", Locations)])


def record(i):
    return Location("alice", f"f{i:02d}", "peer", f"digest{i}", "sha256", i, 1,
                    [Replica("n1", 1)], 1_700_000_000.0 + i)


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def serve(peer, port=None):
    return serve_app(peer.app(), port)


async def serve_records(tmp_path, count, page_limit):
    """A fake peer serving a map of ``count`` records, ``page_limit`` a page:
    (its map, the peer, the server, its port)."""
    locations = LocationMap(tmp_path / "peer.db")
    for i in range(count):
        locations.apply(record(i))
    peer = FakePeer(locations, page_limit=page_limit)
    server, port = await serve(peer)
    return locations, peer, server, port


def run(coro):
    asyncio.run(asyncio.wait_for(coro, timeout=15))


def test_heartbeats_mark_a_dead_peer_down_and_pull_locations_in_pages(tmp_path):
    async def scenario():
        locations, peer, server, port = await serve_records(tmp_path, 7, page_limit=3)
        dead = closed_port()
        changes, received, returned = [], [], []
        table = PeerTable("me", ["me", "alive", "dead"], misses_allowed=3,
                          on_change=lambda *c: changes.append(c[:3]))
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
        loop = HeartbeatLoop(table, client, {"alive": f"http://127.0.0.1:{port}",
                                             "dead": f"http://127.0.0.1:{dead}"},
                             interval=2.0, sync_locations=received.extend,
                             on_return=returned.append)
        try:
            await loop.run_once()
            assert peer.beats == [("me", "me")]
            # Seven records in pages of three: the feed is read to its end in one round.
            assert peer.pulls == [0, 3, 6]
            assert [r["path"] for r in received] == [f"f{i:02d}" for i in range(7)]
            assert [r["seq"] for r in received] == list(range(1, 8))
            assert Location.from_json(received[0]) == record(0)
            assert table.status("dead") == RUNNING  # one miss is not enough

            await loop.run_once()
            assert table.status("dead") == RUNNING
            await loop.run_once()
            assert table.status("dead") == DOWN
            assert table.status("alive") == RUNNING
            assert changes == [("dead", RUNNING, DOWN)]
            assert len(peer.beats) == 3
            assert peer.pulls == [0, 3, 6]  # nothing new: no pull
            assert len(received) == 7

            # A new record on the peer: the next ack carries its seq, only it is pulled.
            locations.apply(record(7))
            await loop.run_once()
            assert peer.pulls[3:] == [7]
            assert [r["path"] for r in received[7:]] == ["f07"]

            # Heartbeats go on to the down peer; when it answers, it is running again.
            revived = FakePeer(LocationMap(tmp_path / "revived.db"), page_limit=3)
            revived_server, _ = await serve(revived, dead)
            try:
                await loop.run_once()
                # Back from down: challenged before it is trusted again.
                assert table.status("dead") == VERIFYING and returned == ["dead"]
                assert changes == [("dead", RUNNING, DOWN), ("dead", DOWN, VERIFYING)]
                assert revived.beats == [("me", "me")]
                assert revived.pulls == []  # an empty map: nothing to pull
            finally:
                revived_server.stop()
                revived.locations.close()
        finally:
            server.stop()
            await client.close()
            locations.close()

    run(scenario())


def test_a_page_of_exactly_the_limit_is_followed_by_another(tmp_path):
    async def scenario():
        locations, peer, server, port = await serve_records(tmp_path, 6, page_limit=3)
        received = []
        table = PeerTable("me", ["me", "p"])
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
        loop = HeartbeatLoop(table, client, {"p": f"http://127.0.0.1:{port}"}, 2.0,
                             received.extend)
        try:
            await loop.run_once()
            assert peer.pulls == [0, 3, 6]
            assert len(received) == 6
        finally:
            server.stop()
            await client.close()
            locations.close()

    run(scenario())


def test_a_peer_that_lost_its_map_is_pulled_from_the_start(tmp_path):
    async def scenario():
        locations, peer, server, port = await serve_records(tmp_path, 5, page_limit=100)
        received = []
        table = PeerTable("me", ["me", "p"])
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
        loop = HeartbeatLoop(table, client, {"p": f"http://127.0.0.1:{port}"}, 2.0,
                             received.extend)
        try:
            await loop.run_once()
            assert len(received) == 5
            # The peer comes back with a fresh, shorter map: its seq went backwards.
            peer.locations = LocationMap(tmp_path / "fresh.db")
            peer.locations.apply(record(50))
            await loop.run_once()
            assert peer.pulls == [0, 0]
            assert [r["path"] for r in received[5:]] == ["f50"]
            await loop.run_once()
            assert peer.pulls == [0, 0]  # caught up: no more pulls
        finally:
            server.stop()
            await client.close()
            locations.close()
            peer.locations.close()

    run(scenario())


def test_a_failing_sync_is_retried_on_the_next_beat(tmp_path):
    async def scenario():
        locations, peer, server, port = await serve_records(tmp_path, 2, page_limit=100)
        received, fail = [], [True]

        def sync(records):
            if fail[0]:
                fail[0] = False
                raise RuntimeError("database is locked")
            received.extend(records)

        table = PeerTable("me", ["me", "p"])
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
        loop = HeartbeatLoop(table, client, {"p": f"http://127.0.0.1:{port}"}, 2.0, sync)
        try:
            await loop.run_once()  # the failure is logged, not raised
            assert received == [] and table.status("p") == RUNNING
            await loop.run_once()
            assert [r["path"] for r in received] == ["f00", "f01"]
            assert peer.pulls == [0, 0]
        finally:
            server.stop()
            await client.close()
            locations.close()

    run(scenario())


def test_a_peer_refusing_our_secret_counts_as_missed(tmp_path):
    async def scenario():
        peer = FakePeer(LocationMap(tmp_path / "peer.db"), page_limit=100)
        server, port = await serve(peer)
        changes = []
        table = PeerTable("me", ["me", "p"], misses_allowed=2, on_change=lambda *c: changes.append(c[:3]))
        client = PeerClient("me", ssl_context=None, peer_secret="wrong", timeout=2)
        loop = HeartbeatLoop(table, client, {"p": f"http://127.0.0.1:{port}"}, 2.0, list)
        try:
            await loop.run_once()
            await loop.run_once()
            assert table.status("p") == DOWN
            assert changes == [("p", RUNNING, DOWN)]
            assert peer.beats == []
        finally:
            server.stop()
            await client.close()
            peer.locations.close()

    run(scenario())


def test_one_pull_at_a_time_per_peer_and_a_restart_goes_on_from_the_saved_cursor(tmp_path):
    async def scenario():
        locations, peer, server, port = await serve_records(tmp_path, 9, page_limit=3)
        mine = LocationMap(tmp_path / "mine.db")
        slow = asyncio.Event()
        received = []

        def sync(records):
            received.extend(records)

        table = PeerTable("me", ["me", "p"])
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
        loop = HeartbeatLoop(table, client, {"p": f"http://127.0.0.1:{port}"}, 2.0, sync,
                             cursors=mine)
        real_pull = client.pull_locations

        async def held_pull(base, since):
            await slow.wait()  # the first pull is slow: beats due meanwhile must not pull too
            return await real_pull(base, since)

        client.pull_locations = held_pull
        try:
            first = asyncio.ensure_future(loop.run_once())
            await asyncio.sleep(0.2)
            await loop.run_once()  # the peer is still being pulled from: skipped
            slow.set()
            await first
            assert peer.pulls == [0, 3, 6, 9]
            assert len(received) == 9
            assert mine.pull_cursors() == {"p": 9}

            # A new loop (a restart) reads only what came after the saved cursor.
            locations.apply(record(9))
            client.pull_locations = real_pull
            again = HeartbeatLoop(table, client, {"p": f"http://127.0.0.1:{port}"}, 2.0, sync,
                                  cursors=mine)
            await again.run_once()
            assert peer.pulls[4:] == [9]
            assert [r["path"] for r in received[9:]] == ["f09"]
        finally:
            server.stop()
            await client.close()
            locations.close()
            mine.close()

    run(scenario())


def test_a_pull_cut_short_goes_on_from_its_last_page(tmp_path):
    async def scenario():
        locations, peer, server, port = await serve_records(tmp_path, 9, page_limit=3)
        mine = LocationMap(tmp_path / "mine.db")
        received = []
        table = PeerTable("me", ["me", "p"])
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
        real_pull = client.pull_locations
        calls = []

        async def failing_third(base, since):
            calls.append(since)
            if len(calls) == 3:
                raise PeerError("connection reset")
            return await real_pull(base, since)

        client.pull_locations = failing_third
        loop = HeartbeatLoop(table, client, {"p": f"http://127.0.0.1:{port}"}, 2.0,
                             received.extend, cursors=mine)
        try:
            await loop.run_once()
            assert calls == [0, 3, 6] and len(received) == 6
            assert mine.pull_cursors() == {"p": 6}
            await loop.run_once()  # the next beat asks only for the rest
            assert calls[3:] == [6, 9] and len(received) == 9  # (a full page: one more ask)
            assert mine.pull_cursors() == {"p": 9}
        finally:
            server.stop()
            await client.close()
            locations.close()
            mine.close()

    run(scenario())


def test_records_pushed_right_after_the_last_pull_are_not_pulled_again(tmp_path):
    """A push that takes the peer's map from exactly what was pulled to its new seq leaves
    nothing to pull; one that leaves a gap (a push missed) does not move the cursor, so the
    next beat pulls what was missed. The cursor a push advanced is saved by the next beat."""
    async def scenario():
        locations, peer, server, port = await serve_records(tmp_path, 1, page_limit=100)
        mine = LocationMap(tmp_path / "mine.db")
        table = PeerTable("me", ["me", "p"])
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
        loop = HeartbeatLoop(table, client, {"p": f"http://127.0.0.1:{port}"}, 2.0, list,
                             cursors=mine)
        try:
            await loop.run_once()
            assert peer.pulls == [0]
            assert mine.pull_cursors() == {"p": 1}

            locations.apply(record(1))  # pushed (and applied here) as seq 1 -> 2
            loop.note_pushed("p", 1, 2)
            loop.note_pushed("stranger", 0, 5)  # no peer of ours: ignored
            await loop.run_once()
            assert peer.pulls == [0]  # nothing pulled again
            assert mine.pull_cursors() == {"p": 2}  # and the cursor kept

            locations.apply(record(2))  # a push this node missed (seq 2 -> 3) ...
            locations.apply(record(3))
            loop.note_pushed("p", 3, 4)  # ... so the next one leaves a gap: not taken
            await loop.run_once()
            assert peer.pulls == [0, 2]
            assert mine.pull_cursors() == {"p": 4}
        finally:
            server.stop()
            await client.close()
            locations.close()
            mine.close()

    run(scenario())


def test_a_pull_skips_the_records_this_node_was_pushed(tmp_path):
    """The pull names the spans of each coordinator's numbers this node was pushed; the peer
    sends those records as their sequence numbers alone, which the cursor moves past and
    nothing applies. A complete pull starts the peer's span from the numbers it answers."""
    def numbered(i, coordinator, cseq):
        loc = record(i)
        loc.coordinator, loc.cseq = coordinator, cseq
        return loc

    async def scenario():
        locations, peer, server, port = await serve_records(tmp_path, 0, page_limit=100)
        peer.own = [100, 102]
        for i, (coordinator, cseq) in enumerate([("p", 101), ("p", 102), ("me", 7)]):
            locations.apply(numbered(i, coordinator, cseq))
        received = []
        spans = PushedSpans("me", type("Own", (), {"span": lambda self: (5, 7)})())
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
        loop = HeartbeatLoop(PeerTable("me", ["me", "p"]), client,
                             {"p": f"http://127.0.0.1:{port}"}, 2.0, received.extend,
                             pushed=spans)
        try:
            await loop.run_once()
            # This node's own record was never sent back; p's were (no span for p yet).
            assert [r["path"] for r in received] == ["f00", "f01"]
            assert spans.known()["p"] == (100, 102)

            for i, cseq in ((3, 103), (4, 104), (5, 105)):
                locations.apply(numbered(i, "p", cseq))
            peer.own = [100, 105]
            spans.pushed("p", 102, 103)  # 103 and 105 were pushed here, 104 was not:
            spans.pushed("p", 104, 105)  # the span stops at 103
            await loop.run_once()
            assert [r["path"] for r in received[2:]] == ["f04", "f05"]
            assert peer.pulls == [0, 3]
            assert loop._pulled["p"] == 6  # moved past the records not sent
            assert spans.known()["p"] == (100, 105)
        finally:
            server.stop()
            await client.close()
            locations.close()

    run(scenario())


def test_a_peer_cut_off_during_a_long_pull_is_seen_down_by_the_beats_meanwhile(tmp_path):
    # The pull waits out its timeout on a peer that went away under it; the beats must not
    # wait with it (CI saw a node take 10 s longer than its peers to see a cut-off peer).
    async def scenario():
        locations, peer, server, port = await serve_records(tmp_path, 3, page_limit=10)
        hung = asyncio.Event()
        table = PeerTable("me", ["me", "p"], misses_allowed=3)
        client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
        mine = LocationMap(tmp_path / "mine.db")
        # A 1 s interval gives the first beat 0.8 s to be answered: with 0.2 (0.16 s) a
        # loaded machine missed it, and the pull the test is about never started.
        loop = HeartbeatLoop(table, client, {"p": f"http://127.0.0.1:{port}"}, 1.0,
                             lambda records: None, cursors=mine)

        async def hanging_pull(base, since):
            await hung.wait()  # the peer went away: no answer until the test lets go
            raise PeerError("no answer")

        client.pull_locations = hanging_pull
        try:
            first = asyncio.ensure_future(loop.run_once())  # answered; its pull hangs
            for _ in range(100):
                if peer.beats:
                    break
                await asyncio.sleep(0.01)

            async def cut_off(*args, **kwargs):
                raise PeerError("no answer within 0.16 s")

            client.heartbeat = cut_off  # the next beats miss
            for _ in range(3):
                await loop.run_once()
            assert table.status("p") == DOWN and not first.done()
            hung.set()
            await first
            assert table.status("p") == DOWN  # the answer from before the cut is not counted
        finally:
            server.stop()
            await client.close()
            locations.close()
            mine.close()

    run(scenario())


@contextlib.asynccontextmanager
async def fake_peer(tmp_path):
    """A fake peer with an empty map, and this node's client: (peer, its URL, client)."""
    locations, peer, server, port = await serve_records(tmp_path, 0, page_limit=10)
    client = PeerClient("me", ssl_context=None, peer_secret=SECRET, timeout=2)
    try:
        yield peer, f"http://127.0.0.1:{port}", client
    finally:
        server.stop()
        await client.close()
        locations.close()


def test_a_beat_tells_a_peer_counted_down_by_the_majority(tmp_path):
    # Its peers can count a hung node down before its own window runs out: the beats that
    # reach it then tell it, so that it knows they wrote without it.
    async def scenario():
        async with fake_peer(tmp_path) as (peer, url, client):
            for size, told in ((3, True), (5, False)):  # 2 of 3 a majority, 2 of 5 not
                table = PeerTable("me", ["me", "p"], misses_allowed=3)
                quorum = Quorum(table, size, window=60.0)
                loop = HeartbeatLoop(table, client, {"p": url}, 0.5, lambda records: None,
                                     quorum=quorum)
                for _ in range(3):
                    table.record_miss("p")  # down before it ever answered: never counted
                await loop.run_once()
                assert peer.downs[-1] is False and table.status("p") == VERIFYING
                table.challenge_done("p", True)
                for _ in range(3):
                    table.record_miss("p")  # answered, then counted down
                await loop.run_once()
                # Told its boot and round as last heard (the fake answers round 0).
                assert peer.downs[-1] == ({"boot": "boot-1", "round": 0} if told else False)
                assert table.status("p") == VERIFYING  # and challenged as it answers
                await loop.run_once()
                assert peer.downs[-1] is False  # no longer down in this view

    run(scenario())


def test_a_peer_counted_down_while_this_node_was_cut_off_is_not_told(tmp_path):
    # This node counted the peer down without the majority (cut off itself): it wrote
    # nothing without it, and must not have it verified again once it has the majority back.
    async def scenario():
        async with fake_peer(tmp_path) as (peer, url, client):
            table = PeerTable("me", ["me", "p", "q"], misses_allowed=3)
            quorum = Quorum(table, 3, window=60.0)
            loop = HeartbeatLoop(table, client,
                                 {"p": url, "q": f"http://127.0.0.1:{closed_port()}"},
                                 0.5, lambda records: None, quorum=quorum)
            await loop.run_once()  # heard from p: me and p, a majority of three
            for _ in range(3):
                table.record_miss("p")
            quorum.lost("p")  # cut off: no majority while p counts down
            client.heartbeat = missed = _missing(client.heartbeat)
            await loop.run_once()
            assert dict(missed.calls)[url] is None
            client.heartbeat = missed.real
            quorum.heard("q")  # the majority back (q answers), p still down here
            await loop.run_once()
            assert peer.downs[-1] is False

    run(scenario())


def test_a_running_node_told_it_was_counted_down_is_verified_again(tmp_path):
    cluster = MemoryCluster(tmp_path)
    try:
        node = cluster.nodes["n1"]
        answer = node.heartbeat_answer("n2", 0)
        assert answer["status"] == RUNNING and answer["round"] == 0
        as_heard = {"boot": node.boot, "round": 0}
        node.heartbeat_answer("n9", 0, as_heard)  # not a peer: not believed
        node.heartbeat_answer("n1", 0, as_heard)
        # Counted down since an earlier life of this node: it restarted, and its peers
        # challenge it for that.
        node.heartbeat_answer("n2", 0, {"boot": "an-earlier-boot", "round": 0})
        assert node.peers.self_status == RUNNING
        answer = node.heartbeat_answer("n2", 0, as_heard)
        # Verifying in a new round, so that every peer (n3 too) challenges it again.
        assert answer["status"] == VERIFYING and answer["round"] == 1
        assert node.heartbeat_answer("n3", 0, as_heard)["round"] == 1  # one round
        node.peers.set_self(RUNNING, "passed")
        # Told again by a peer that counted it down before that round: it has been
        # verified since (it knew it was cut off), so it is not verified again.
        assert node.heartbeat_answer("n3", 0, as_heard)["status"] == RUNNING
        assert node.heartbeat_answer("n3", 0, {"boot": node.boot, "round": 1})["round"] == 2
    finally:
        cluster.close()


def _missing(heartbeat):
    """A heartbeat that misses, noting what it would have told the peer."""
    async def missed(base, timeout, pulled=0, counted_down=None):
        missed.calls.append((base, counted_down))
        raise PeerError("no answer")
    missed.calls, missed.real = [], heartbeat
    return missed
