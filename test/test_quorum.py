"""Unit tests of the majority rule, the witness and the lock reservations (no processes)."""
import asyncio

from securifile.common.paths import parse_path
from securifile.nodes.locationmap import Location
from securifile.nodes.locks import LockTable
from securifile.nodes.quorum import Quorum

from .fakes import Clock


class Peers:
    def __init__(self, me, others):
        self.self_name = me
        self.names = others


def quorum(n, witness=None):
    names = [f"node{i}" for i in range(1, n + 1)]
    clock = Clock()
    changes = []
    q = Quorum(Peers(names[0], names[1:]), n, window=2.0, witness=witness, clock=clock,
               on_change=lambda has, detail: changes.append(has))
    return q, clock, changes


def test_a_node_serves_only_once_it_has_heard_from_a_majority():
    q, clock, changes = quorum(3)
    assert not q.has() and not q.ever
    q.heard("node2")
    assert q.has() and q.ever and changes == [True]


def test_silence_longer_than_the_window_loses_the_majority():
    q, clock, changes = quorum(3)
    q.heard("node2")
    q.heard("node3")
    clock.now += 1.5
    q.heard("node3")
    assert q.has()
    clock.now += 1.0  # node2 silent for 2.5 s, node3 for 1 s: still two of three
    assert q.has()
    clock.now += 1.5  # both silent too long
    assert not q.has() and changes == [True, False]
    assert "only 1 of 3" in q.detail()


def test_an_answer_counts_from_when_its_beat_was_sent():
    """A beat sent before the process stood still (SIGSTOP) is answered after it: the answer
    vouches for the peer as of the sending, long past the window."""
    q, clock, changes = quorum(3)
    q.heard("node2")
    assert q.has()
    sent = clock.now
    clock.now += 3.4  # stood still
    q.heard("node2", sent)
    assert not q.has() and changes == [True, False]


def test_a_loss_nobody_asked_about_is_noticed_before_new_answers_count():
    """Stood still longer than the window, then answered at once by its peers (which marked
    it down meanwhile, and wrote without it): it must go through being cut off (verifying,
    checked again) rather than carry on serving as if it had never been away."""
    q, clock, changes = quorum(3)
    q.heard("node2")
    q.heard("node3")
    assert q.has() and changes == [True]
    clock.now += 3.4  # nobody called has() meanwhile
    q.heard("node2", clock.now - 0.01)
    q.heard("node3", clock.now - 0.01)
    assert q.has() and changes == [True, False, True]


def test_a_peer_seen_down_stops_counting_at_once():
    q, clock, _ = quorum(3)
    q.heard("node2")
    q.lost("node2")
    assert not q.has()


def test_a_single_server_cluster_always_serves():
    q, _clock, _ = quorum(1)
    assert q.has() and q.enough(1)


def test_exactly_half_needs_the_witness_grant():
    granted = []

    async def witness(side):
        granted.append(side)
        return 4.0

    q, clock, _ = quorum(2, witness)
    clock.now += 2.0  # past the first window (below)
    assert not q.has()
    asyncio.run(q.refresh())
    assert granted == [["node1"]] and q.has() and q.enough(1)
    clock.now += 4.0 * 0.8  # the node's own lease is shorter than the witness's
    assert not q.has()


def test_a_node_just_started_does_not_ask_the_witness_before_its_peers_could_answer():
    """Started, it has heard from some peers only: half of them is "not all answered yet",
    not a split, and a lease granted then would hold up membership changes (CI saw a new
    fourth server, having heard from one peer, take one and an administrator's drain be
    refused for it)."""
    asked = []

    async def witness(side):
        asked.append(side)
        return 4.0

    q, clock, _ = quorum(4, witness)
    q.heard("node2")  # two of four, within the first window

    async def within_the_first_window():
        assert not q.has()
        await q.refresh()
        await asyncio.sleep(0)  # what has() would have started
    asyncio.run(within_the_first_window())
    assert asked == []
    clock.now += 1.9
    q.heard("node2")
    asyncio.run(q.refresh())
    assert asked == []
    clock.now += 0.1  # a whole window since the start: still half, so a real tie
    q.heard("node2")
    asyncio.run(q.refresh())
    assert asked == [["node1", "node2"]] and q.has()


def test_a_refused_or_silent_witness_gives_no_majority():
    async def refuse(side):
        return 0.0

    async def silent(side):
        raise OSError("connection refused")

    for witness in (refuse, silent):
        q, _clock, _ = quorum(4, witness)
        q.heard("node2")
        asyncio.run(q.refresh())
        assert not q.has() and not q.enough(2)


def test_more_than_half_never_asks_the_witness():
    async def witness(side):
        raise AssertionError("asked")

    q, _clock, _ = quorum(4, witness)
    for n in ("node2", "node3"):
        q.heard(n)
    asyncio.run(q.refresh())
    assert q.has() and q.enough(3) and not q.enough(2)


def test_reservations_only_grow_and_outlive_the_lock():
    locks = LockTable()
    fp = parse_path("alice/f")
    locks.acquire(fp, "alice", "node1", "t1", 30)
    first = locks.reserve(fp, 4)
    assert first == 5
    locks.release_node("node1")  # its coordinator seen down
    assert locks.held(fp) is None
    locks.acquire(fp, "bob", "node2", "t2", 30)
    # Above what the lost coordinator may publish: its stamp, and the one after it that a
    # corrected record of its change would carry.
    assert locks.reserve(fp, 4) == 7
    locks.raise_reservation(fp, 9)
    assert locks.reserve(fp, 0) == 11


def test_release_node_drops_only_that_nodes_locks():
    locks = LockTable()
    a, b = parse_path("alice/a"), parse_path("alice/b")
    locks.acquire(a, "alice", "node1", "t1", 30)
    locks.acquire(b, "alice", "node2", "t2", 30)
    assert locks.release_node("node1") == 1
    assert locks.held(a) is None and locks.held(b) is not None


def test_records_order_by_stamp_and_legacy_records_by_version():
    def rec(**kw):
        base = dict(owner="alice", path="f", origin="node1", digest="d", algorithm="sha256",
                    size=1, modified=1.0)
        return Location(**{**base, **kw})

    legacy = rec(version=3)  # written before stamps: its stamp is its version
    assert (legacy.stamp, legacy.coordinator) == (3, "node1")
    assert rec(version=3, stamp=4, coordinator="node2").newer_than(legacy)
    # A change of holders keeps the version and takes a higher stamp.
    assert rec(version=3, stamp=5, modified=0.5).newer_than(rec(version=3, stamp=4, modified=9))
    # Different coordinators never share a stamp; if they did, the order is still total.
    a, b = rec(stamp=7, coordinator="node1"), rec(stamp=7, coordinator="node2")
    assert b.newer_than(a) and not a.newer_than(b)
    assert Location.from_json(rec(version=2, stamp=8, coordinator="node3").to_json()).stamp == 8
