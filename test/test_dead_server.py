"""A server dead for good, not taken out of the cluster: once every other server counts it
down and has promised to refuse its writes (``nodes/refusals.py``), they read without
asking each other first; restarted, it writes again once those promises have run out.
Real processes on loopback ports."""
import os

from .helpers import Api, wait_for
from .test_faults import DETECT, VERIFY, put_ok, settled, wait_seen


def doubted(cluster, name):
    st = cluster.status(name)
    return None if st is None else st["doubted"]


def test_a_dead_server_is_no_longer_doubted_and_back_it_writes_at_once(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    files = {"alice/dead/before.bin": os.urandom(20_000)}
    put_ok(api, "node1", "alice/dead/before.bin", files["alice/dead/before.bin"])
    living = ["node1", "node2"]

    cluster.kill("node3")
    wait_seen(cluster, living, "node3", "down")
    # Before: doubted for as long as it stayed down, every read asking the other first.
    wait_for(lambda: all(doubted(cluster, n) == [] for n in living), DETECT,
             what="node1 and node2 to doubt node3 no longer")
    files["alice/dead/during.bin"] = os.urandom(5000)
    put_ok(api, "node2", "alice/dead/during.bin", files["alice/dead/during.bin"])
    for node in living:
        for path, data in files.items():
            served_by, r = api.follow(node, "GET", path)
            assert r.status == 200 and r.body == data, (node, path, r)
    # (A promise renewed late on a loaded machine lets the doubt back for a moment: safe.)
    wait_for(lambda: all(doubted(cluster, n) == [] for n in living), DETECT,
             what="node1 and node2 still not doubting node3")

    cluster.restart("node3")
    wait_seen(cluster, cluster.names, "node3", "running", VERIFY)
    # Running in its own view only once the promises to refuse it have run out: its first
    # write is taken by both others, and read anywhere at once.
    data = os.urandom(5000)
    r = api.put("node3", "alice/dead/after.bin", data)
    assert r.status == 201 and r.json()["under_replicated"] is False, r
    for node in cluster.names:
        served_by, got = api.follow(node, "GET", "alice/dead/after.bin")
        assert got.status == 200 and got.body == data, (node, got)
    # Its missed beats leave it doubted a while (it may have counted the others down).
    wait_for(lambda: all(doubted(cluster, n) == [] for n in cluster.names), DETECT,
             what="no server doubting another")
