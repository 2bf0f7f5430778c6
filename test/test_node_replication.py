"""Replication under failure: a replica that dies mid-copy is cut off cleanly."""
import hashlib
import os
import threading

from .helpers import Api, disk_copy, wait_for

SIZE = 96 * 1024 * 1024


def _upload_while_killing_first_replica(cluster, tmp_path):
    api = Api(cluster)
    data = os.urandom(SIZE)
    result = {}
    def upload():
        try:
            result["r"] = api.put("node1", "alice/big.bin", data)
        except Exception as e:  # surfaced below rather than lost in the thread
            result["error"] = e

    t = threading.Thread(target=upload)
    t.start()

    def receiving_replica():
        if "error" in result or "r" in result:
            raise AssertionError(f"upload ended before a replica copy was seen: {result}")
        for name in cluster.names[1:]:
            tmp = cluster.cfg.node_data_dir(name) / "tmp"
            if tmp.exists() and any(tmp.iterdir()):
                return name
        return None

    victim = wait_for(receiving_replica, timeout=60, interval=0.005, what="a replica copy to start")
    cluster.kill(victim)
    t.join(120)
    assert not t.is_alive()
    return data, victim, result["r"]


def test_dead_replica_is_replaced_by_a_spare(make_cluster, tmp_path):
    cluster = make_cluster(servers=4, replicas=2)
    data, victim, r = _upload_while_killing_first_replica(cluster, tmp_path)
    assert r.status == 201, r
    body = r.json()
    replicas = [x["server"] for x in sorted(body["replicas"], key=lambda x: x["priority"])]
    assert len(replicas) == 2 and victim not in replicas and not body["under_replicated"]
    digest = hashlib.sha256(data).hexdigest()
    assert body["digest"] == digest
    for node in ["node1", *replicas]:
        with open(disk_copy(cluster, node, "alice", "big.bin"), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest


def test_without_a_spare_the_upload_reports_fewer_replicas(make_cluster, tmp_path):
    cluster = make_cluster(servers=3, replicas=2)
    data, victim, r = _upload_while_killing_first_replica(cluster, tmp_path)
    assert r.status == 201, r
    body = r.json()
    assert [x["server"] for x in body["replicas"]] != [] and len(body["replicas"]) == 1
    assert body["replicas"][0]["priority"] == 1
    assert body["under_replicated"] is True and body["replicas_wanted"] == 2
    api = Api(cluster)
    _node, got = api.follow("node1", "GET", "alice/big.bin")
    assert got.status == 200 and hashlib.sha256(got.body).digest() == hashlib.sha256(data).digest()
    # The dead replica's half copy never shows at the file's name when it comes back.
    cluster.restart(victim)
    assert not disk_copy(cluster, victim, "alice", "big.bin").exists()
    assert not any((cluster.cfg.node_data_dir(victim) / "tmp").iterdir())
