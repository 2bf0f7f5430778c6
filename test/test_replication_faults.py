"""Probe tests of the replication protocol under faults, on loopback processes: majority
locks, deletes under the lock, locks of dead coordinators, the last server standing, the
admin server as witness, and automatic repair. (Partitions proper, with network
namespaces, are in test_partition.py.)"""
import os
import signal

from .helpers import AdminApi, Api, disk_copy, wait_for
from .test_faults import (DETECT, VERIFY, SlowUpload, error_of, holders_of, others, put_ok,
                          settled, sha, wait_seen, wait_serving)

REPAIR = dict(repair_after=1.5, repair_interval=0.3)


def records(api, node, owner="alice"):
    r = api.request(node, "GET", f"/files/{owner}/", raw_path=True)
    return {f["path"]: f for f in r.json()["files"]} if r.status == 200 else None


def current_holders(rec):
    return [h for h in holders_of(rec) if h not in rec["stale"]]


def db_files(admin, prefix="alice/"):
    r = admin.get(f"/api/v1/files?prefix={prefix}")
    assert r.status == 200, r
    return {f["path"]: f for f in r.json()["files"]}


def test_a_delete_during_someone_elses_upload_is_refused_with_423(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    path = "alice/race/doc.bin"
    put_ok(api, "node1", path, b"first")
    origin = holders_of(records(api, "node1")["race/doc.bin"])[0]
    body = os.urandom(200_000)
    up = SlowUpload(api, origin, path, len(body))
    try:
        up.wait_continue()
        up.send(body[:1000])
        for node in cluster.names:
            r = api.request(node, "DELETE", path)
            assert r.status in (423, 307), (node, r)
            if r.status == 423:
                assert error_of(r)["holder"] == "alice"
        up.send(body[1000:])
        r = up.response()
    finally:
        up.close()
    assert r.status == 200, r
    for node in cluster.names:
        served_by, got = api.follow(node, "GET", path)
        assert got.status == 200 and got.body == body, (node, served_by, got)
    # Afterwards the delete goes through, once, and stays.
    served_by, r = api.follow("node2", "DELETE", path)
    assert r.status == 204, r
    for node in cluster.names:
        assert api.follow(node, "GET", path)[1].status == 404


def test_a_dead_coordinators_lock_goes_when_it_is_seen_down_not_after_the_lease(make_cluster):
    # A lease far longer than the test: only the down detection can free the file.
    cluster = settled(make_cluster, servers=3, replicas=1, lock_lease_seconds=120)
    api = Api(cluster)
    path = "alice/lease/file.bin"
    first = put_ok(api, "node1", path, os.urandom(50_000))
    origin, replica = holders_of(first)
    third = others(cluster, origin, replica)[0]
    up = SlowUpload(api, origin, path, 1 << 20)
    up.wait_continue()
    up.send(os.urandom(4096))
    assert api.put(third, path, b"too early").status == 423
    cluster.kill(origin)
    up.close()
    wait_seen(cluster, [replica, third], origin, "down")
    after = os.urandom(60_000)

    def written():
        _node, r = api.follow(third, "PUT", path, body=after)
        return r if r.status == 200 else None

    r = wait_for(written, DETECT, interval=0.2, what="the dead writer's lock to go")
    rec = r.json()
    assert rec["version"] == first["version"] + 1 and rec["stamp"] > first["stamp"]
    assert rec["digest"] == sha(after)


def test_the_last_server_standing_stops_serving_and_nothing_fails(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    put_ok(api, "node1", "alice/alone.txt", b"kept")
    cluster.kill("node2")
    cluster.kill("node3")
    wait_for(lambda: (cluster.status("node1") or {}).get("quorum") is False, DETECT,
             what="node1 to see it is alone")
    for method, body in (("GET", None), ("PUT", b"new"), ("DELETE", None)):
        r = api.request("node1", method, "alice/alone.txt", body=body)
        assert r.status == 503 and error_of(r)["code"] == "no_quorum", (method, r)
    cluster.start_node("node2")
    cluster.start_node("node3")
    for n in cluster.names:
        wait_serving(cluster, n)
    assert not any(p["status"] == "failed" for n in cluster.names
                   for p in cluster.status(n)["peers"])
    # Each node learns that the others serve again from their next heartbeat answers.
    wait_for(lambda: all(api.follow(n, "GET", "alice/alone.txt")[1].body == b"kept"
                         for n in cluster.names), VERIFY, what="the file readable everywhere")


def test_three_servers_go_on_without_the_admin_server(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    cluster.kill("admin")
    put_ok(api, "node2", "alice/no-admin.txt", b"one")
    cluster.kill("node3")
    wait_seen(cluster, ["node1", "node2"], "node3", "down")
    # Two of three: a majority without the witness.
    r = api.put("node1", "alice/no-admin-2.txt", b"two")
    assert r.status == 201, r
    assert api.follow("node2", "GET", "alice/no-admin-2.txt")[1].body == b"two"


def test_two_servers_go_on_with_one_while_the_admin_server_answers(make_cluster):
    cluster = settled(make_cluster, servers=2, replicas=1)
    api = Api(cluster)
    put_ok(api, "node1", "alice/pair.txt", b"both")
    cluster.kill("node2")
    wait_seen(cluster, ["node1"], "node2", "down")
    wait_serving(cluster, "node1", DETECT)  # the witness breaks the tie
    assert api.follow("node1", "GET", "alice/pair.txt")[1].body == b"both"
    r = api.put("node1", "alice/pair-2.txt", b"alone")
    assert r.status == 201 and r.json()["under_replicated"], r
    # Without the witness, half is not a majority: node1 stops within its lease.
    cluster.kill("admin")
    wait_for(lambda: (cluster.status("node1") or {}).get("quorum") is False, 15,
             what="node1 to stop without the witness")
    assert error_of(api.get("node1", "alice/pair.txt"))["code"] == "no_quorum"


def test_a_lost_holder_is_replaced_after_repair_after(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1, **REPAIR)
    api, admin = Api(cluster), AdminApi(cluster, "alice")
    files = {f"alice/repair/{i}.bin": os.urandom(20_000 + i) for i in range(6)}
    for path, data in files.items():
        put_ok(api, "node1", path, data)
    # Placement is random: the replica holder of the most files is the one lost (each file
    # has its replica on node2 or node3, so that one holds at least three).
    recs = records(api, "node1")
    held = {n: [p for p in files if n in holders_of(recs[p.split("/", 1)[1]])]
            for n in ("node2", "node3")}
    lost = max(held, key=lambda n: len(held[n]))
    assert len(held[lost]) >= 3, held
    cluster.kill(lost)
    survivors = others(cluster, lost)

    def repaired():
        for node in survivors:
            recs = records(api, node)
            if recs is None:
                return False
            for path in files:
                rec = recs[path.split("/", 1)[1]]
                cur = current_holders(rec)
                if lost in holders_of(rec) or sorted(cur) != sorted(survivors):
                    return False
        return True

    wait_for(repaired, 30, what=f"every file back at two copies, without {lost}")
    for path, data in files.items():
        for node in survivors:
            assert api.follow(node, "GET", path)[1].body == data
            assert disk_copy(cluster, node, *path.split("/", 1)).read_bytes() == data
    wait_for(lambda: all(not f["under_replicated"] and lost not in
                         [r["server"] for r in f["replicas"]] + [f["origin"]]
                         for p, f in db_files(admin).items() if p.startswith("repair/")),
             15, what="the database to show the new holders")

    # The replaced server comes back: it learns the new records and drops its copies.
    cluster.start_node(lost)
    wait_serving(cluster, lost, VERIFY)
    wait_for(lambda: not any(disk_copy(cluster, lost, *p.split("/", 1)).exists()
                             for p in held[lost]),
             VERIFY, what=f"{lost} to drop the copies it was replaced for")
    for path, data in files.items():
        assert api.follow(lost, "GET", path)[1].body == data


def test_an_under_replicated_upload_is_repaired_when_a_server_can_take_the_copy(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=2, repair_interval=0.3)
    api, admin = Api(cluster), AdminApi(cluster, "alice")
    cluster.kill("node3")
    wait_seen(cluster, ["node1", "node2"], "node3", "down")
    r = api.put("node1", "alice/short.bin", b"x" * 5000)
    assert r.status == 201 and r.json()["under_replicated"], r
    wait_for(lambda: db_files(admin).get("short.bin", {}).get("under_replicated"), 15,
             what="the database to say under-replicated")
    cluster.start_node("node3")
    wait_for(lambda: sorted(current_holders(records(api, "node1")["short.bin"]))
             == cluster.names, VERIFY, what="a third copy on node3")
    assert disk_copy(cluster, "node3", "alice", "short.bin").read_bytes() == b"x" * 5000
    wait_for(lambda: db_files(admin)["short.bin"]["under_replicated"] is False, 15,
             what="the database to say replicated")


def test_a_hung_server_loses_the_majority_and_is_verified_when_it_answers_again(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    put_ok(api, "node1", "alice/hang.txt", b"v1")
    cluster.signal("node2", signal.SIGSTOP)
    cluster.signal("node3", signal.SIGSTOP)
    try:
        wait_for(lambda: (cluster.status("node1") or {}).get("quorum") is False, DETECT,
                 what="node1 alone")
        assert cluster.status("node1")["status"] == "verifying"
    finally:
        cluster.signal("node2", signal.SIGCONT)
        cluster.signal("node3", signal.SIGCONT)
    for n in cluster.names:
        wait_serving(cluster, n)
    assert api.follow("node1", "GET", "alice/hang.txt")[1].body == b"v1"
