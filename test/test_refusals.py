"""A peer every voter counts down is refused, promised refused, and so no longer doubted
(``nodes/refusals.py``): in-process nodes, and the promise as a heartbeat carries it."""
import asyncio
import time

import pytest

from securifile.common.errors import ApiError
from securifile.common.paths import FilePath
from securifile.nodes.challenge import ChallengeResult
from securifile.nodes.peers import DOWN, RUNNING, VERIFYING
from securifile.nodes.refusals import Refusals
from securifile.nodes.verification import PASSED, Verifier

from .fakes import Clock
from .memory_cluster import MemoryCluster


@pytest.fixture
def cluster(tmp_path):
    c = MemoryCluster(tmp_path, size=3, replicas=1)
    for node in c.nodes.values():
        node.refusals.lease = 3.0
    yield c
    c.close()


def count_down(node, peer):
    for _ in range(node.peers.misses_allowed):
        node.peers.record_miss(peer)
    assert node.peers.status(peer) == DOWN


def test_a_peer_is_refused_while_down_and_until_the_last_promise_runs_out():
    status, clock = {"n3": DOWN}, Clock(100.0)
    refusals = Refusals(status.get, lease=3.0, clock=clock)
    assert refusals.refuses("n3") and refusals.left("n3") == 0
    # Just started: it may have promised before a restart, and passes nobody for a lease.
    assert refusals.hold_for("n2") == 3.0
    assert refusals.promise([]) is None
    assert refusals.promise(["n3"]) == {"peers": ["n3"], "for": 3.0}
    status["n3"] = VERIFYING  # back: refused until the promise runs out
    clock.now = 102.0
    assert refusals.refuses("n3") and refusals.left("n3") == 1.0
    with pytest.raises(ApiError) as e:
        refusals.check("n3", "records")
    assert e.value.status == 503 and e.value.code == "counted_down", e.value
    assert e.value.headers == {"Retry-After": "1"}
    assert refusals.hold_for("n3") == 1.0 and refusals.hold_for("n2") == 1.0
    clock.now = 103.0
    assert not refusals.refuses("n3") and refusals.hold_for("n3") == 0
    refusals.check("n3", "records")
    assert Refusals(status.get, lease=0.0).promise(["n3"]) is None  # no lease: no promise


def test_a_node_refuses_the_locks_and_records_of_a_peer_it_counts_down(cluster):
    """Before: a peer counted down still had its records taken (and its lock granted) by a
    node that had written without it; now 503 ``counted_down``, nothing applied."""
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "late.txt")
    record = {"owner": "alice", "path": "late.txt", "origin": "n3", "digest": "00" * 32,
              "algorithm": "sha256", "size": 1, "version": 1, "replicas": [],
              "modified": 1.0, "stamp": 5, "coordinator": "n3"}
    count_down(n1, "n3")
    for call in (lambda: n1.grant_lock(fp, "alice", "n3", "t1", 30.0, 0),
                 lambda: n1.receive_locations("n3", [record])):
        with pytest.raises(ApiError) as e:
            call()
        assert (e.value.status, e.value.code) == (503, "counted_down"), e.value
    assert n1.locations.get(fp) is None and n1.locks.held(fp) is None
    # The others' calls are answered as before.
    assert n1.grant_lock(fp, "alice", "n2", "t2", 30.0, 0)["ok"] is True


def test_a_heartbeat_answer_promises_to_refuse_the_peers_counted_down(cluster):
    n2 = cluster.nodes["n2"]
    assert "refusing" not in n2.heartbeat_answer("n1", 0)
    count_down(n2, "n3")
    assert n2.heartbeat_answer("n1", 0)["refusing"] == {"peers": ["n3"], "for": 3.0}
    # Not to a stranger, and not about the caller itself.
    assert "refusing" not in n2.heartbeat_answer("n9", 0)
    count_down(n2, "n1")
    assert n2.heartbeat_answer("n1", 0)["refusing"] == {"peers": ["n3"], "for": 3.0}


def test_a_dead_peer_promised_refused_by_every_voter_is_not_doubted_and_reads_ask_nobody(cluster):
    """n3 died: n1 and n2 count it down; once n2's answer carries its promise, n1 reads
    without asking (before: every read asked n2 for as long as n3 stayed down)."""
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    fp = cluster.place("alice", "a.txt", ["n1", "n2"])
    cluster.unreachable.add("n3")
    count_down(n1, "n3")
    count_down(n2, "n3")
    assert n1.peers.doubted(10.0) == {"n3"}
    n1.doubt_window = 10.0
    assert asyncio.run(n1.read_newest(fp)) == 1  # n2 asked

    answer = n2.heartbeat_answer("n1", 0)
    n1.peers.note_promise("n2", answer["refusing"], sent=n1.peers.clock())
    assert n1.peers.doubted(10.0) == set()
    calls = n1.client.calls
    assert asyncio.run(n1.read_newest(fp)) == 0 and n1.client.calls == calls
    assert n1.status()["doubted"] == []

    # n2 hears n3 again (it stops promising): n1 doubts n3 at once, and n2 still refuses
    # n3's records for the rest of its promise.
    n2.peers.record_ack("n3")
    assert "refusing" not in n2.heartbeat_answer("n1", 0)
    n1.peers.note_promise("n2", None, sent=n1.peers.clock())
    assert n1.peers.doubted(10.0) == {"n3"}
    assert n2.peers.status("n3") == VERIFYING and n2.refusals.refuses("n3")


def test_a_returning_peer_is_passed_at_once_and_told_how_long_its_writes_are_refused(cluster):
    """It serves at once; this node refuses its locks and records until its promise runs
    out, and says so with the verdict (``hold``)."""
    n2 = cluster.nodes["n2"]
    n2.refusals.lease = 3.0
    n2.refusals._started -= 10.0  # started long ago: only the promise holds the peer back
    count_down(n2, "n3")
    n2.heartbeat_answer("n1", 0)  # promised to n1: refused for 3 s from now
    n2.peers.record_ack("n3")  # answers again: verifying, its challenge under way
    verdicts = []

    async def challenge(peer):
        return ChallengeResult()  # nothing in common: passed

    async def send_verdict(base, passed, detail, hold=0.0):
        verdicts.append((base, passed, hold, n2.peers.status("n3")))

    verifier = Verifier(n2)
    verifier._challenge = challenge
    n2.client.send_verdict = send_verdict
    started = time.monotonic()
    assert asyncio.run(verifier.run("n3")) == PASSED
    assert time.monotonic() - started < 1.0
    [(base, passed, hold, status)] = verdicts
    assert (base, passed, status) == ("mem://n3", True, RUNNING) and 2.0 < hold <= 3.0
    assert n2.refusals.refuses("n3")


def test_a_node_holds_the_writes_it_coordinates_while_a_judge_still_refuses_them(cluster):
    """Refused, they would fail (503): the lock round waits the judge's hold out. Only a
    verdict from a peer that challenged this node holds anything."""
    n2, n3 = cluster.nodes["n2"], cluster.nodes["n3"]
    with pytest.raises(ApiError):
        n3.receive_verdict("n1", True, "never challenged", hold=30.0)
    assert n3.refusals.writes_held() == 0
    n3.peers.note_challenge("n2", 0)
    n3.receive_verdict("n2", True, "no files", hold=0.3)
    assert 0.2 < n3.refusals.writes_held() <= 0.3
    n2.refusals.lease = 0.3
    count_down(n2, "n3")
    n2.heartbeat_answer("n1", 0)
    n2.peers.record_ack("n3")
    n2.peers.challenge_done("n3", True)  # running in n2's view, its writes refused 0.3 s

    async def write():
        started = time.monotonic()
        ticket = await n3.lock(FilePath("alice", "held.txt"), "alice")
        n3.release(ticket)
        return time.monotonic() - started, ticket.granted

    waited, granted = asyncio.run(write())
    assert waited >= 0.2 and sorted(granted) == ["n1", "n2"]
