"""Choosing replica servers, and which holder a user is sent to."""
import random
from collections import Counter

import pytest

from securifile.nodes.locationmap import Location, Replica
from securifile.nodes.peers import PeerTable
from securifile.nodes.placement import place_replicas, serving_holder

PEERS = ["n2", "n3", "n4", "n5", "n6"]


@pytest.mark.parametrize("count", [0, 1, 2, 3, 5])
def test_place_replicas_picks_distinct_candidates(count):
    for seed in range(50):
        chosen = place_replicas(PEERS, count, random.Random(seed))
        assert len(chosen) == count
        assert len(set(chosen)) == count
        assert set(chosen) <= set(PEERS)


@pytest.mark.parametrize("candidates, count", [
    (["n2", "n3"], 5),
    (["n2"], 1),
    ([], 2),
    (PEERS, 6),
])
def test_place_replicas_caps_the_count_at_the_candidates(candidates, count):
    chosen = place_replicas(candidates, count, random.Random(1))
    assert sorted(chosen) == sorted(candidates)  # all of them, each once


def test_place_replicas_is_deterministic_for_a_seed_whatever_the_candidate_order():
    a = place_replicas(PEERS, 3, random.Random(42))
    b = place_replicas(list(reversed(PEERS)), 3, random.Random(42))
    c = place_replicas(set(PEERS), 3, random.Random(42))
    assert a == b == c


def test_place_replicas_does_not_touch_the_candidate_list():
    candidates = list(PEERS)
    place_replicas(candidates, 3, random.Random(3))
    assert candidates == PEERS


def test_place_replicas_spreads_over_every_candidate():
    rng = random.Random(7)
    first = Counter(place_replicas(PEERS, 2, rng)[0] for _ in range(2000))
    assert set(first) == set(PEERS)
    # Uniform: each of 5 peers comes first about 400 times in 2000.
    assert all(250 < n < 550 for n in first.values()), first


def location(origin, replicas):
    return Location("alice", "f", origin, "d", "sha256", 1, 1,
                    [Replica(s, p) for s, p in replicas])


def test_serving_holder_goes_origin_first_then_by_priority():
    loc = location("n1", [("n3", 2), ("n2", 1), ("n4", 3)])
    assert loc.holders == ["n1", "n2", "n3", "n4"]
    up = {"n1", "n2", "n3", "n4"}
    assert serving_holder(loc, up.__contains__) == "n1"
    up.discard("n1")
    assert serving_holder(loc, up.__contains__) == "n2"
    up.discard("n2")
    assert serving_holder(loc, up.__contains__) == "n3"
    up = {"n4", "n2"}
    assert serving_holder(loc, up.__contains__) == "n2"
    assert serving_holder(loc, set().__contains__) is None


def test_serving_holder_with_a_peer_table():
    table = PeerTable("n2", ["n1", "n2", "n3"], misses_allowed=1)
    loc = location("n1", [("n3", 1), ("n2", 2)])
    assert serving_holder(loc, table.is_running) == "n1"
    table.record_miss("n1")
    assert serving_holder(loc, table.is_running) == "n3"
    table.record_miss("n3")
    assert serving_holder(loc, table.is_running) == "n2"  # this node itself
    table.self_status = "offline"
    assert serving_holder(loc, table.is_running) is None
