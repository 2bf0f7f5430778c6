"""Partitions between real processes, each server in its own network namespace (test/netns.py).

The harness is checked first: addresses, which namespace reaches which, a cut that separates
a server from its peers only, a heal, and a cluster serving across namespaces. Then the
scenarios of the split-brain report: a server cut off from its peers while clients still
reach it, and the admin server as the witness that breaks ties.
"""
import os
import socket
import subprocess
import time

import pytest

from .helpers import AdminApi, Api, wait_for
from .netns import ADMIN_ADDRESS, CLIENT_ADDRESS, entered, lab_or_skip, server_address

PROBE_PORT = 9000


# -- the harness --------------------------------------------------------------------------

@pytest.fixture
def lab():
    made = lab_or_skip(3)
    yield made
    made.remove()


def reaches(netns, address, timeout=1.0):
    with entered(netns):
        try:
            socket.create_connection((address, PROBE_PORT), timeout=timeout).close()
            return True
        except OSError:
            return False


def reachability(lab):
    """{(from, to): reached} between every pair of the lab's hosts."""
    hosts = {f"node{i}": (ns, server_address(i)) for i, ns in enumerate(lab.nodes, 1)}
    hosts.update(admin=(lab.admin, ADMIN_ADDRESS), client=(lab.client, CLIENT_ADDRESS))
    return {(a, b): reaches(hosts[a][0], hosts[b][1]) for a in hosts for b in hosts if a != b}


def test_the_lab_cuts_a_server_off_from_its_peers_only_and_heals(lab):
    listeners = []
    try:
        for netns, address in [(ns, server_address(i)) for i, ns in enumerate(lab.nodes, 1)] + \
                [(lab.admin, ADMIN_ADDRESS), (lab.client, CLIENT_ADDRESS)]:
            with entered(netns):
                s = socket.socket()
                s.bind((address, PROBE_PORT))
                s.listen(64)
                listeners.append(s)
        assert all(reachability(lab).values())
        lab.cut(3)
        assert lab.cut_off() == [3]
        cut = reachability(lab)
        assert {pair for pair, ok in cut.items() if not ok} == {
            ("node1", "node3"), ("node2", "node3"), ("node3", "node1"), ("node3", "node2")}
        lab.heal(3)
        assert lab.cut_off() == []
        assert all(reachability(lab).values())
    finally:
        for s in listeners:
            s.close()


def test_the_lab_breaks_the_link_between_two_servers_only_and_heals_it(lab):
    listeners = []
    try:
        for netns, address in [(ns, server_address(i)) for i, ns in enumerate(lab.nodes, 1)]:
            with entered(netns):
                s = socket.socket()
                s.bind((address, PROBE_PORT))
                s.listen(64)
                listeners.append(s)
        lab.cut_between(1, 3)
        lab.cut_between(3, 1)  # twice: the same cut
        cut = reachability(lab)
        assert {pair for pair, ok in cut.items() if not ok and "node" in pair[1]} == {
            ("node1", "node3"), ("node3", "node1")}
        assert lab.cut_off() == []
        lab.heal_between(1, 3)
        lab.heal_between(1, 3)
        assert all(ok for pair, ok in reachability(lab).items() if "node" in pair[1])
    finally:
        for s in listeners:
            s.close()


def test_the_lab_is_removed_with_its_namespaces():
    made = lab_or_skip(2)
    names = made.namespaces
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert all(ns in listed for ns in names)
    made.remove()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in names)


def netns_inode(name):
    return os.stat(f"/run/netns/{name}").st_ino


def test_a_cluster_serves_across_namespaces(make_netns_cluster):
    cluster = make_netns_cluster(servers=3, replicas=1)
    for name in cluster.names + ["admin"]:  # each process runs in its own namespace
        assert os.stat(f"/proc/{cluster.procs[name].pid}/ns/net").st_ino == \
            netns_inode(cluster.lab.netns_of(name))
    assert cluster.cfg.server("node2").url == "https://169.254.1.2:8442"
    wait_for(lambda: all(Api(cluster).sees(o, p, "running") for o in cluster.names
                         for p in cluster.names if p != o), 20, what="every node running")
    api = Api(cluster)
    r = api.put("node1", "alice/a.txt", b"across namespaces")
    assert r.status == 201, r
    for node in cluster.names:
        _, got = api.follow(node, "GET", "alice/a.txt")
        assert got.status == 200 and got.body == b"across namespaces", (node, got)

    # Cut off, node3 misses its peers' heartbeats and they miss its; the client still
    # reaches it. Healed, the heartbeats flow again (whatever the verdict on node3).
    cluster.cut("node3")
    apart = [("node1", "node3"), ("node2", "node3"), ("node3", "node1"), ("node3", "node2")]
    wait_for(lambda: all(api.sees(o, p, "down") for o, p in apart), 20,
             what="node3 and its peers to see each other down")
    assert api.sees("node1", "node2", "running") and api.sees("node2", "node1", "running")
    cluster.heal("node3")
    wait_for(lambda: not any(api.sees(o, p, "down") for o, p in [("node1", "node3"),
                                                                 ("node3", "node1")]),
             20, what="the heartbeats between node1 and node3 to flow again")


# -- the scenarios ------------------------------------------------------------------------

BEATS = dict(heartbeat_interval=0.5)  # 4 misses: a peer is down about 2 s after the cut
DETECT = 10.0  # cut to "down" (and to no_quorum): generous for a loaded machine
VERIFY = 30.0  # a healed or returning server checked and running again
CUT_SECONDS = 22.0  # how long the split-brain report kept node3 cut off
STOP_SLACK = 3.0  # how much later than its peers' verdict the cut-off server may stop serving
QUICK_WRITE = 5.0  # a majority write must not wait out the peer timeout (10 s) on the cut peer


def error_code(r):
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def view(cluster, observer, peer):
    st = cluster.status(observer)
    if st is None:
        return None
    if peer == observer:
        return st["status"]
    return next((p["status"] for p in st["peers"] if p["name"] == peer), None)


def no_server_failed(cluster):
    """Asserts that no server reports itself or a peer failed; returns the views."""
    views = {(o, p): view(cluster, o, p) for o in cluster.names for p in cluster.names}
    assert "failed" not in views.values(), f"a server went failed: {views}"
    return views


def wait_all_running(cluster, timeout=VERIFY, names=None):
    names = names or cluster.names

    def check():
        views = no_server_failed(cluster)
        return all(views[(o, p)] == "running" for o in names for p in names)
    wait_for(check, timeout, what=f"{', '.join(names)} to see each other running")


def wait_seen(cluster, observers, peer, status, timeout=DETECT):
    wait_for(lambda: all(view(cluster, o, peer) == status for o in observers), timeout,
             what=f"{', '.join(observers)} to see {peer} {status}")


def quorum(cluster, name):
    st = cluster.status(name)
    return None if st is None else st.get("quorum")


def refused_no_quorum(r):
    return r.status == 503 and error_code(r) == "no_quorum"


def admin_history(admin, name):
    r = admin.get(f"/api/v1/servers/{name}/history")
    assert r.status == 200, r
    return r.json()["history"]


def test_a_server_cut_off_from_its_peers_stops_serving_and_is_brought_up_to_date(
        make_netns_cluster):
    """The split-brain report: node3 cut off from its peers (clients still reach it) for
    22 s, at r=2 on 3 servers."""
    cluster = make_netns_cluster(servers=3, replicas=2, **BEATS)
    wait_all_running(cluster)
    api, admin = Api(cluster), AdminApi(cluster)
    v1, v2, gone, new, n3v2 = (os.urandom(5000 + i) for i in range(5))
    for node, path, data in [("node1", "alice/kept.bin", v1), ("node1", "alice/gone.bin", gone),
                             ("node3", "alice/n3.bin", v1)]:
        r = api.put(node, path, data)
        assert r.status == 201 and not r.json().get("under_replicated"), r
    verified_before = {o: sum(1 for h in admin_history(admin, "node3")
                              if h["observer"] == o and h["new"] == "running")
                       for o in ("node1", "node2")}

    cluster.cut("node3")
    cut_at = time.monotonic()
    # node3 must stop serving no later than its peers give it up and write without it.
    since = {}

    def both_sides_know():
        now = time.monotonic()
        if "minority" not in since and refused_no_quorum(api.get("node3", "alice/kept.bin")):
            since["minority"] = now
        if "majority" not in since and all(view(cluster, o, "node3") == "down"
                                           for o in ("node1", "node2")):
            since["majority"] = now
        return len(since) == 2
    wait_for(both_sides_know, DETECT,
             what="node3 to answer 503 no_quorum and node1 and node2 to see it down")
    assert since["minority"] <= since["majority"] + STOP_SLACK, \
        f"node3 served {since['minority'] - since['majority']:.1f} s after its peers gave it up"
    assert quorum(cluster, "node3") is False
    assert quorum(cluster, "node1") is True and quorum(cluster, "node2") is True

    # The majority reads and writes, without waiting on the unreachable peer.
    started = time.monotonic()
    _, r = api.follow("node1", "PUT", "alice/kept.bin", body=v2)
    assert r.status == 200, r
    assert time.monotonic() - started < QUICK_WRITE, "a majority write waited on the cut peer"
    _, r = api.follow("node2", "DELETE", "alice/gone.bin")
    assert r.status == 204, r
    r = api.put("node2", "alice/new.bin", new)
    assert r.status == 201, r
    _, r = api.follow("node1", "PUT", "alice/n3.bin", body=n3v2)  # its origin is node3
    assert r.status == 200, r
    for node in ("node1", "node2"):
        assert api.follow(node, "GET", "alice/kept.bin")[1].body == v2
        assert api.follow(node, "GET", "alice/gone.bin")[1].status == 404
        assert api.follow(node, "GET", "alice/n3.bin")[1].body == n3v2

    # The minority serves nothing and takes nothing, for as long as the cut lasts.
    attempts = 0
    while time.monotonic() - cut_at < CUT_SECONDS:
        attempts += 1
        for method, path, body in [("GET", "alice/kept.bin", None), ("GET", "alice/gone.bin", None),
                                   ("PUT", "alice/kept.bin", b"minority"),
                                   ("PUT", f"alice/minority-{attempts}.bin", b"minority"),
                                   ("DELETE", "alice/n3.bin", None)]:
            r = api.request("node3", method, path, body=body)
            assert refused_no_quorum(r), (method, path, r)
        time.sleep(0.5)
    assert attempts >= 10

    cluster.heal("node3")
    wait_all_running(cluster)
    wait_for(lambda: all(sum(1 for h in admin_history(admin, "node3")
                             if h["observer"] == o and h["new"] == "running") > n
                         for o, n in verified_before.items()), VERIFY,
             what="node1 and node2 to verify node3 again")
    expected = {"alice/kept.bin": v2, "alice/n3.bin": n3v2, "alice/new.bin": new}

    def everywhere_current():
        no_server_failed(cluster)
        for node in cluster.names:
            for path, data in expected.items():
                got = api.follow(node, "GET", path)[1]
                if got.status != 200 or got.body != data:
                    return False
            if api.follow(node, "GET", "alice/gone.bin")[1].status != 404:
                return False
        return True
    wait_for(everywhere_current, VERIFY, interval=0.5, what="v2 served everywhere")
    # r=2 on 3 servers: every server holds every file, node3's stale copies brought up to date.
    data_dir = cluster.cfg.node_data_dir

    def on_disk(node, path):
        p = data_dir(node) / "files" / path
        return p.read_bytes() if p.exists() else None
    wait_for(lambda: all(on_disk(n, p) == d for n in cluster.names for p, d in expected.items()),
             VERIFY, what="every copy current on disk")
    assert all(on_disk(n, "alice/gone.bin") is None for n in cluster.names)
    assert not list((data_dir("node3") / "files" / "alice").glob("minority-*"))
    for node in cluster.names:
        assert not any(h["new"] == "failed" for h in admin_history(admin, node)), node


def test_two_servers_cut_apart_but_both_reaching_the_admin_server_one_side_serves(
        make_netns_cluster):
    cluster = make_netns_cluster(servers=2, replicas=1, **BEATS)
    wait_all_running(cluster)
    api = Api(cluster)
    assert api.put("node1", "alice/both.bin", b"before").status == 201
    cluster.cut("node2")
    wait_seen(cluster, ["node1"], "node2", "down")
    wait_seen(cluster, ["node2"], "node1", "down")

    def one_side():
        sides = {n: quorum(cluster, n) for n in cluster.names}
        return sides if sorted(sides.values(), key=str) == [False, True] else None
    sides = wait_for(one_side, DETECT, what="exactly one side to keep its quorum")
    serving = next(n for n, q in sides.items() if q)
    stopped = next(n for n, q in sides.items() if not q)
    for i in range(10):  # and it stays that way: writes on one side only
        r = api.follow(serving, "PUT", "alice/both.bin", body=b"serving %d" % i)[1]
        assert r.status == 200, (serving, r)
        assert refused_no_quorum(api.request(stopped, "PUT", "alice/both.bin", body=b"no")), stopped
        assert refused_no_quorum(api.request(stopped, "GET", "alice/both.bin")), stopped
        assert one_side() == sides
    cluster.heal("node2")
    wait_all_running(cluster)
    wait_for(lambda: all(api.follow(n, "GET", "alice/both.bin")[1].body == b"serving 9"
                         for n in cluster.names), VERIFY, what="the last write served by both")


def test_a_link_cut_between_two_servers_hides_no_acknowledged_write(make_netns_cluster):
    """node1 and node3 lose each other, both still reach node2 (which hears both): each of
    the two keeps its majority through node2 and writes without the other. What one of them
    acknowledged, the other finds at once (until 2026-12-07 only after its next pull from
    node2: 404 for a new file, the old bytes for a changed one, a listing without them)."""
    # r=2: node2 holds every file, so a reader always has a running holder to send to.
    cluster = make_netns_cluster(servers=3, replicas=2, **BEATS)
    wait_all_running(cluster)
    api = Api(cluster)
    for node in ("node1", "node3"):
        assert api.put(node, f"alice/{node}-old.bin", b"old from " + node.encode()).status == 201
    wait_for(lambda: all(api.follow(n, "GET", f"alice/{o}-old.bin")[1].status == 200
                         for n in cluster.names for o in ("node1", "node3")), DETECT,
             what="the first files everywhere")

    cluster.cut_between("node1", "node3")
    try:
        wait_seen(cluster, ["node1"], "node3", "down")
        wait_seen(cluster, ["node3"], "node1", "down")
        assert all(quorum(cluster, n) for n in cluster.names)
        # (node2 too when a beat to it went unanswered lately on a loaded machine)
        assert "node3" in cluster.status("node1")["doubted"]
        assert "node1" in cluster.status("node3")["doubted"]
        for i in range(8):  # bounded; each round writes on one side, reads on the other
            for writer, reader in (("node1", "node3"), ("node3", "node1")):
                body = os.urandom(3000 + i)
                r = api.put(writer, f"alice/{writer}-new-{i}.bin", body)
                assert r.status == 201 and r.json()["under_replicated"], (writer, r)
                _, r = api.follow(writer, "PUT", f"alice/{writer}-old.bin", body=body)
                assert r.status == 200, (writer, r)
                if i % 2 == 0:  # the listing first: a read would have brought the records
                    r = api.get(reader, "alice/")
                    listed = {f["path"]: f["version"] for f in r.json()["files"]}
                    assert listed.get(f"{writer}-new-{i}.bin") == 1, (reader, listed)
                    assert listed[f"{writer}-old.bin"] == i + 2, (reader, listed)
                else:
                    got = api.request(reader, "HEAD", f"alice/{writer}-old.bin")
                    assert got.status in (200, 307), (reader, got)
                    if got.status == 200:
                        assert got.headers["X-SecuriFile-Version"] == str(i + 2), (reader, got)
                _, got = api.follow(reader, "GET", f"alice/{writer}-new-{i}.bin")
                assert got.status == 200 and got.body == body, (reader, i, got)
                _, got = api.follow(reader, "GET", f"alice/{writer}-old.bin")
                assert got.status == 200 and got.body == body, (reader, i, got)
        assert no_server_failed(cluster)
    finally:
        cluster.heal_between("node1", "node3")
    wait_all_running(cluster)
    wait_for(lambda: all(cluster.status(n)["doubted"] == [] for n in cluster.names), VERIFY,
             what="no server doubting another once the link is back")


def test_a_promise_about_a_cut_off_server_ends_before_it_writes_again(make_netns_cluster):
    """node3 loses both its links: node1 and node2 count it down and, each holding the
    other's promise to refuse its writes, no longer doubt it (nodes/refusals.py). Then the
    link node2 - node3 alone comes back: node3 rejoins through node2 and writes with it,
    while node1 still cannot hear it. node1 must not read on node2's old promise: by the
    time node3 writes again node1 doubts it, and finds at once what node3 acknowledged.
    (node3 serves as soon as node2 has passed it, and holds its writes until node2's
    promise has run out: refused by node2 they would fail.)"""
    cluster = make_netns_cluster(servers=3, replicas=1, **BEATS)
    wait_all_running(cluster)
    api = Api(cluster)
    cluster.cut_between("node1", "node3")
    cluster.cut_between("node2", "node3")
    try:
        wait_seen(cluster, ["node1", "node2"], "node3", "down")
        wait_for(lambda: all(cluster.status(n)["doubted"] == [] for n in ("node1", "node2")),
                 DETECT, what="node1 and node2 to doubt node3 no longer")
        # node3 notices it is cut off only once its own window has passed.
        wait_for(lambda: quorum(cluster, "node3") is False, DETECT, what="node3 cut off")
        cluster.heal_between("node2", "node3")
        wait_for(lambda: view(cluster, "node3", "node3") == "running", VERIFY,
                 what="node3 running again, through node2")
        assert view(cluster, "node1", "node3") == "down"
        for i in range(5):  # bounded: writes on node3, each read on node1 at once
            body = os.urandom(2000 + i)
            r = api.put("node3", f"alice/back-{i}.bin", body)
            assert r.status == 201, r
            assert "node3" in cluster.status("node1")["doubted"], i
            _, got = api.follow("node1", "GET", f"alice/back-{i}.bin")
            assert got.status == 200 and got.body == body, (i, got)
        assert no_server_failed(cluster)
    finally:
        cluster.heal_between("node1", "node3")
        cluster.heal_between("node2", "node3")
    wait_all_running(cluster)


# -- the admin server as the witness (on loopback: no partition needed) ---------------------

def test_with_the_admin_server_killed_three_servers_read_and_write_on(make_cluster):
    cluster = make_cluster(servers=3, replicas=1, **BEATS)
    wait_all_running(cluster)
    api = Api(cluster)
    assert api.put("node1", "alice/w/a.bin", b"a1").status == 201
    cluster.kill("admin")
    wait_for(lambda: all(quorum(cluster, n) is True for n in cluster.names), DETECT,
             what="every server to keep its quorum without the admin server")
    for i, node in enumerate(cluster.names):
        r = api.follow(node, "PUT", "alice/w/a.bin", body=b"a%d" % (i + 2))[1]
        assert r.status == 200, (node, r)
        assert api.put(node, f"alice/w/{node}.bin", node.encode()).status == 201
    for node in cluster.names:
        assert api.follow(node, "GET", "alice/w/a.bin")[1].body == b"a4"
        for other in cluster.names:
            assert api.follow(node, "GET", f"alice/w/{other}.bin")[1].body == other.encode()
    assert api.follow("node2", "DELETE", "alice/w/node1.bin")[1].status == 204
    assert all(api.follow(n, "GET", "alice/w/node1.bin")[1].status == 404 for n in cluster.names)


def test_two_servers_one_killed_the_other_goes_on_while_the_admin_server_answers(make_cluster):
    cluster = make_cluster(servers=2, replicas=1, **BEATS)
    wait_all_running(cluster)
    api = Api(cluster)
    assert api.put("node1", "alice/pair/a.bin", b"a1").status == 201
    cluster.kill("node2")
    wait_seen(cluster, ["node1"], "node2", "down")
    # Alone, node1 is half the servers: it goes on once the witness grants it its lease.
    wait_for(lambda: quorum(cluster, "node1") is True, DETECT,
             what="node1 to keep its quorum with the admin server's lease")
    r = api.follow("node1", "PUT", "alice/pair/a.bin", body=b"a2")[1]
    assert r.status == 200, r
    r = api.put("node1", "alice/pair/b.bin", b"b1")
    assert r.status == 201 and r.json()["under_replicated"], r
    assert api.follow("node1", "GET", "alice/pair/a.bin")[1].body == b"a2"

    # Without the witness a lone server of two is no majority: it stops serving.
    cluster.kill("admin")
    wait_for(lambda: refused_no_quorum(api.get("node1", "alice/pair/a.bin")), DETECT,
             what="node1 alone, without the admin server, to answer 503 no_quorum")
    assert quorum(cluster, "node1") is False
    assert refused_no_quorum(api.put("node1", "alice/pair/c.bin", b"c1"))
