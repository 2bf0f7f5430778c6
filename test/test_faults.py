"""Probe tests: real node and admin processes killed, hung, tampered with and brought back.

Each test starts its own cluster (admin server and nodes as processes, heartbeats every
0.5 s: a dead node is down within a few seconds) and checks states through ``/status`` and
the admin API, and bytes on disk. Every wait polls with a deadline
(``wait_for``); every loop is bounded in count and time. At the end of each scenario every
acknowledged write is read back, with its digest, through every running node.
"""
import hashlib
import http.client
import io
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit


from securifile.client.storage import Client
from securifile.common.digests import repr_digest
from securifile.common.tls import client_context
from securifile.nodes.challenge import (CORRUPT, OK, REPLAYED, STALE, ChallengeResult,
                                        answer_challenge, check_answer, new_challenge, stat_key)
from securifile.nodes.locationmap import CopyRecord, Location

from .helpers import AdminApi, Api, Response, disk_copy, wait_for

# Heartbeats every 0.5 s rather than the fixtures' faster ones: on a loaded machine a node
# busy with a TLS upload can miss several short beats in a row (each one a new TLS
# connection, with the interval as its timeout), mark every peer down and store the file
# without replicas.
BEATS = dict(heartbeat_interval=0.5)
DETECT = 10.0  # kill to "down": 2 to 3 s with these settings; generous for a loaded machine
VERIFY = 20.0  # a returning node checked and running again
LEASE = 2.0  # lock lease for the tests that let a dead writer's lock run out


# -- helpers ------------------------------------------------------------------------------

def settled(make_cluster, **kw):
    """A started cluster in which every node sees itself and every peer running.

    Nodes start one after the other: the first up count the others' missed heartbeats and
    check them when they answer, so right after start a peer can still be down or verifying
    in some view (and would get no replica and no lock).
    """
    cluster = make_cluster(**{**BEATS, **kw})
    wait_for(lambda: all(view(cluster, o, p) == "running" for o in cluster.names
                         for p in cluster.names),
             VERIFY, what="every node to see every node running")
    return cluster


def sha(data):
    return hashlib.sha256(data).hexdigest()


def put_ok(api, node, path, data, attempts=4):
    """An acknowledged PUT; its record. A new file must get its replica: on a loaded machine
    an origin can briefly count its peers down (missed beats) and store a new file without
    one, and then it is deleted and stored again (so its version can be above 1)."""
    cluster = api.cluster
    for _ in range(attempts):
        r = api.put(node, path, data)
        assert r.status in (200, 201), r
        body = r.json()
        assert body["digest"] == sha(data) and body["size"] == len(data)
        if r.status == 200 or not body["under_replicated"]:
            return body
        assert api.request(node, "DELETE", path).status == 204
        for peer in [p for p in others(cluster, node) if cluster.status(p) is not None]:
            wait_seen(cluster, [node], peer, "running", VERIFY)
    raise AssertionError(f"{node} stored {path} without a replica {attempts} times")


def holders_of(record):
    """Origin first, then the replicas in priority order."""
    return [record["origin"]] + [r["server"] for r in
                                 sorted(record["replicas"], key=lambda r: r["priority"])]


def others(cluster, *names):
    return [n for n in cluster.names if n not in names]


def view(cluster, observer, peer):
    """``observer``'s view of ``peer`` (or of itself), None if it does not answer."""
    st = cluster.status(observer)
    if st is None:
        return None
    if peer == observer:
        return st["status"]
    return next((p["status"] for p in st["peers"] if p["name"] == peer), None)


def wait_seen(cluster, observers, peer, status, timeout=DETECT, never=()):
    """Until every observer reports ``peer`` as ``status``; fails at once on a ``never`` state.
    Running means running in its own view too: a returning node serves a heartbeat after its
    peers passed it (nodes/peers.py), and a test's next request may go to it."""
    if status == "running" and peer not in observers:
        observers = [*observers, peer]

    def check():
        seen = {o: view(cluster, o, peer) for o in observers}
        bad = {o: s for o, s in seen.items() if s in never}
        assert not bad, f"{peer} seen {bad} while waiting for {status}"
        return all(s == status for s in seen.values())
    wait_for(check, timeout, what=f"{', '.join(observers)} to see {peer} {status}")


def wait_own(cluster, name, status, timeout=VERIFY, never=()):
    wait_seen(cluster, [name], name, status, timeout, never)


def wait_serving(cluster, name, timeout=VERIFY):
    """Until ``name`` is running and hears a majority: it serves users."""
    def serving():
        st = cluster.status(name)
        return st is not None and st["status"] == "running" and st.get("quorum")
    wait_for(serving, timeout, what=f"{name} serving")


def copy_on_disk(cluster, node, path):
    owner, rel = path.split("/", 1)
    return disk_copy(cluster, node, owner, rel)


def assert_readable(api, files, via):
    """Every file reads back whole, with its digest, through each node of ``via``.

    The nodes of ``via`` are the running ones: first they must see each other running (on a
    loaded machine one can briefly miss a few beats and be checked again).
    """
    cluster = api.cluster
    for node in via:
        wait_seen(cluster, [o for o in via if o != node], node, "running", VERIFY)
    for path, data in files.items():
        for node in via:
            served_by, r = api.follow(node, "GET", path)
            assert r.status == 200, (node, path, r)
            assert r.body == data, f"{path} through {node} (served by {served_by}) differs"
            assert r.headers["Repr-Digest"] == repr_digest("sha256", sha(data))


def wait_caught_up(cluster, api, node, files):
    """Until ``node`` (just back) has pulled the records of ``files`` and every peer sees it
    running. A returning node can be passed and run before its own first pull of the
    location map: for that moment it answers 404 for files created while it was away."""
    wait_seen(cluster, others(cluster, node), node, "running", VERIFY)
    wait_for(lambda: all(record_on(api, node, p) for p in files), VERIFY,
             what=f"{node} to pull the location records it missed")


def wait_current(cluster, api, path, version):
    """Until every node's record of ``path`` is at ``version`` with no stale holder (the node
    just brought up to date learns it from its next pull: the broadcast that clears its name
    goes out while it is still being verified, to running peers only)."""
    def current():
        records = [record_on(api, n, path) for n in cluster.names]
        return all(r and r["version"] == version and r["stale"] == [] for r in records)
    wait_for(current, VERIFY, what=f"{path} at version {version}, stale nowhere, in every map")


def record_on(api, node, path):
    """The location record ``node`` keeps for ``path`` (from its folder listing); None also
    while the node does not serve yet (it has not heard from a majority since its start)."""
    owner, rel = path.split("/", 1)
    r = api.request(node, "GET", f"/files/{owner}/", raw_path=True)
    if r.status == 503 and error_of(r)["code"] in ("not_synced", "server_not_running"):
        return None
    assert r.status == 200, r
    return next((f for f in r.json()["files"] if f["path"] == rel), None)


def servers(admin):
    r = admin.get("/api/v1/servers")
    assert r.status == 200, r
    return {s["name"]: s for s in r.json()["servers"]}


def listed(admin, name):
    return servers(admin)[name]["status"]


def history(admin, name):
    r = admin.get(f"/api/v1/servers/{name}/history")
    assert r.status == 200, r
    return r.json()["history"]


def changes(admin, subject, observer=None, old=None, new=None):
    return [h for h in history(admin, subject)
            if (observer is None or h["observer"] == observer)
            and (old is None or h["old"] == old) and (new is None or h["new"] == new)]


def error_of(r):
    return r.json()["error"]


def get_at(api, node, path):
    """GET served by ``node`` itself: the ``holder`` query says another node chose it."""
    return api.request(node, "GET", f"/files/{quote(path, safe='/')}?holder={node}", raw_path=True)


class SlowUpload:
    """A PUT whose body the test sends piece by piece over its own (TLS) socket.

    It asks ``Expect: 100-continue``, and a node answers 100 only once its ``prepare`` has
    run: the write lock is then held on every running node.
    """

    def __init__(self, api, node, path, length):
        u = urlsplit(api.cluster.url(node))
        raw = socket.create_connection((u.hostname, u.port), timeout=20)
        self.sock = api.ctx.wrap_socket(raw, server_hostname=u.hostname) if api.ctx else raw
        auth = f"Authorization: Bearer {api.token}\r\n" if api.token else ""
        self.sock.sendall((f"PUT /files/{quote(path, safe='/')} HTTP/1.1\r\n"
                           f"Host: {u.hostname}:{u.port}\r\nContent-Length: {length}\r\n"
                           f"Content-Type: application/octet-stream\r\n{auth}"
                           "Expect: 100-continue\r\n\r\n").encode())

    def wait_continue(self):
        head = b""
        for _ in range(8192):  # a status line and no headers: far less than this
            byte = self.sock.recv(1)
            assert byte, f"connection closed before an answer: {head!r}"
            head += byte
            if head.endswith(b"\r\n\r\n"):
                break
        assert head.split()[1] == b"100", f"the node refused the upload: {head!r}"

    def send(self, data):
        self.sock.sendall(data)

    def response(self):
        r = http.client.HTTPResponse(self.sock, method="PUT")
        r.begin()
        return Response(r.status, r.headers, r.read())

    def close(self):
        self.sock.close()


def broken_off(action):
    """True if ``action`` fails on the connection (reset, closed, or no answer)."""
    try:
        action()
    except (OSError, http.client.HTTPException):
        return True
    return False


def unlocked_put(api, node, path, data):
    """(node that answered, response) of a PUT (following redirects) that got past the
    locks, or None while it gets 423."""
    try:
        served_by, r = api.follow(node, "PUT", path, body=data)
    except OSError:  # redirected to a holder that just died, before the others noticed
        return None
    if r.status == 423:
        assert error_of(r)["holder"] == "alice", r
        return None
    return served_by, r


def no_temp_files(cluster, node):
    return not any((cluster.cfg.node_data_dir(node) / "tmp").iterdir())


# -- failure detection --------------------------------------------------------------------

def test_a_hung_node_is_marked_down_read_elsewhere_then_challenged_and_running(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    files = {"alice/hung/own.bin": os.urandom(300_000), "alice/hung/held.bin": os.urandom(4000)}
    own = put_ok(api, "node2", "alice/hung/own.bin", files["alice/hung/own.bin"])
    replica = holders_of(own)[1]
    put_ok(api, "node1", "alice/hung/held.bin", files["alice/hung/held.bin"])
    observers = others(cluster, "node2")

    cluster.signal("node2", signal.SIGSTOP)
    try:
        wait_seen(cluster, observers, "node2", "down")
        wait_for(lambda: listed(admin, "node2") == "down", DETECT,
                 what="node2 down in the database")
        # Its own file is read from its replica, whichever running node the user asks.
        for node in observers:
            served_by, r = api.follow(node, "GET", "alice/hung/own.bin")
            assert (served_by, r.status) == (replica, 200), r
            assert r.body == files["alice/hung/own.bin"]
        assert_readable(api, files, observers)
    finally:
        cluster.signal("node2", signal.SIGCONT)

    # Answering again, it is challenged by each running peer before they send users to it.
    wait_seen(cluster, observers, "node2", "running", VERIFY, never=("failed",))
    for observer in observers:
        wait_for(lambda: changes(admin, "node2", observer, "down", "verifying")
                 and changes(admin, "node2", observer, "verifying", "running"),
                 what=f"{observer}'s challenge of node2 in the history")
    passed = changes(admin, "node2", replica, "verifying", "running")
    assert any(re.match(r"\d+ ok \(", h["detail"]) for h in passed), passed  # their shared copies
    assert view(cluster, "node2", "node2") == "running"
    # It knew it had been away: cut off (verifying) in its own view too, not running on
    # as if its peers had counted it all along (they wrote without it).
    # (Reported by node2 itself: it can reach the database after its observers' reports.)
    wait_for(lambda: any("cut off from the majority" in h["detail"]
                         for h in changes(admin, "node2", "node2", "running", "verifying")),
             what="node2's own cut-off in the history")
    served_by, r = api.follow("node2", "GET", "alice/hung/own.bin")
    assert (served_by, r.status) == ("node2", 200) and r.body == files["alice/hung/own.bin"]
    wait_for(lambda: listed(admin, "node2") == "running", what="node2 running in the database")
    assert_readable(api, files, cluster.names)


def test_a_node_counted_down_before_its_own_window_ran_out_is_verified_again(make_cluster):
    # The peers count a hung node down after their missed beats; the node itself notices
    # only once no majority has answered it for its whole window. A hang between the two
    # (CI saw one) left it running in its own view while its peers had written without it.
    # Here node2's own window is 8 s, its peers count it down in about 2: the hang ends
    # between the two, every time.
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    cluster.kill("node2")
    path = cluster.data_dir / "node2-long-window.toml"
    path.write_text(cluster.config_path.read_text().replace(
        f"heartbeat_misses = {cluster.cfg.heartbeat_misses}", "heartbeat_misses = 16"))
    assert "heartbeat_misses = 16" in path.read_text()
    cluster.added["node2"] = (cluster.cfg.server("node2"), path)
    cluster.restart("node2")
    wait_seen(cluster, cluster.names, "node2", "running", VERIFY)
    data = os.urandom(5000)
    put_ok(api, "node2", "alice/window/own.bin", data)
    observers = others(cluster, "node2")

    cluster.signal("node2", signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_seen(cluster, observers, "node2", "down")
    finally:
        cluster.signal("node2", signal.SIGCONT)
    assert time.monotonic() - stopped < 8.0, "hung longer than node2's own window"

    wait_for(lambda: any(re.search(r"node[13] counted it down", h["detail"])
                         for h in changes(admin, "node2", "node2", "running", "verifying")),
             DETECT, what="node2 verifying in its own view, told by a peer that counted it down")
    wait_seen(cluster, observers, "node2", "running", VERIFY, never=("failed",))
    wait_own(cluster, "node2", "running")
    for observer in observers:  # each checked its copies before counting it again
        wait_for(lambda: changes(admin, "node2", observer, "verifying", "running"),
                 what=f"{observer}'s challenge of node2 in the history")
    served_by, r = api.follow("node2", "GET", "alice/window/own.bin")
    assert (served_by, r.status) == ("node2", 200) and r.body == data


def test_a_killed_node_is_down_everywhere_and_checked_when_it_restarts(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    files = {f"alice/kill/{i}.txt": os.urandom(1000 + i) for i in range(4)}
    for i, (path, data) in enumerate(files.items()):
        put_ok(api, cluster.names[i % 3], path, data)
    wait_for(lambda: {s["status"] for s in servers(admin).values()} == {"running"},
             what="every server running in the database")

    cluster.kill("node3")
    wait_seen(cluster, ["node1", "node2"], "node3", "down")
    wait_for(lambda: listed(admin, "node3") == "down", DETECT, what="node3 down in the database")
    assert listed(admin, "node1") == listed(admin, "node2") == "running"
    assert_readable(api, files, ["node1", "node2"])

    cluster.restart("node3")  # it holds files: running only once its peers passed them
    wait_seen(cluster, ["node1", "node2"], "node3", "running", VERIFY)
    wait_for(lambda: listed(admin, "node3") == "running", what="node3 running in the database")
    assert_readable(api, files, cluster.names)


# -- reads and writes while a holder dies -------------------------------------------------

def test_killing_the_origin_mid_download_the_client_finishes_from_the_replica(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    data = os.urandom(32 << 20)  # far more than the socket buffers hold when the origin dies
    origin, replica = holders_of(put_ok(api, "node1", "alice/big/movie.bin", data))
    cluster.write_json()

    class KillOriginOnFirstBytes(io.BytesIO):
        killed = False

        def write(self, chunk):
            if not self.killed:
                self.killed = True
                cluster.kill(origin)  # the rest of the body never comes from the origin
            return super().write(chunk)

    out = KillOriginOnFirstBytes()
    with Client.from_cluster_file(cluster.data_dir / "cluster.json", holder_deadline=30) as client:
        info = client.download("alice/big/movie.bin", out)
    assert out.killed
    assert api.node_for(info["server"]) == replica  # the end of the file came from the replica
    assert info["verified"] and info["digest"] == sha(data) and info["size"] == len(data)
    assert out.getvalue() == data
    # The client went on at once (avoid); plain redirects need the replica to see it down.
    wait_seen(cluster, [replica], origin, "down")
    assert_readable(api, {"alice/big/movie.bin": data}, [replica])


def test_killing_the_origin_mid_upload_leaves_no_half_file_and_no_lock(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1, lock_lease_seconds=LEASE)
    api = Api(cluster)
    path = "alice/up/half.bin"
    up = SlowUpload(api, "node1", path, 6 << 20)
    up.wait_continue()
    up.send(os.urandom(3 << 20))  # more than the node buffers before writing to its temp file
    tmp = cluster.cfg.node_data_dir("node1") / "tmp"
    wait_for(lambda: any(p.stat().st_size > 0 for p in tmp.iterdir()),
             what="the upload's temp file on node1")
    cluster.kill("node1")
    assert broken_off(lambda: (up.send(os.urandom(3 << 20)), up.response()))  # the rest
    up.close()

    wait_seen(cluster, ["node2", "node3"], "node1", "down")
    for node in cluster.names:
        assert not copy_on_disk(cluster, node, path).exists()
    for node in ["node2", "node3"]:
        assert no_temp_files(cluster, node)
        assert api.get(node, path).status == 404
        assert record_on(api, node, path) is None

    # The dead writer's lock runs out with its lease: the same path is then accepted elsewhere.
    data = os.urandom(200_000)
    _node, r = wait_for(lambda: unlocked_put(api, "node2", path, data), LEASE + DETECT,
                        interval=0.2, what="the write lock to run out")
    assert r.status == 201, r
    record = r.json()
    assert record["origin"] == "node2" and record["version"] == 1
    assert holders_of(record) == ["node2", "node3"]

    cluster.restart("node1")  # the crash's temp file is swept; nothing at the file's name
    assert no_temp_files(cluster, "node1")
    assert not copy_on_disk(cluster, "node1", path).exists()
    wait_caught_up(cluster, api, "node1", [path])
    assert_readable(api, {path: data}, cluster.names)


def test_a_replica_killed_while_a_modification_is_copied_is_stale_then_repaired(make_cluster):
    # (A replica killed while a new file is copied: test_node_replication.py.)
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    path = "alice/mod/big.bin"
    old = os.urandom(1 << 20)
    first = put_ok(api, "node1", path, old)
    origin, replica = holders_of(first)
    new = os.urandom(64 << 20)
    result = {}

    def modify():
        try:
            result["r"] = api.put(origin, path, new)
        except Exception as e:  # surfaced below rather than lost in the thread
            result["error"] = e

    t = threading.Thread(target=modify)
    t.start()
    replica_tmp = cluster.cfg.node_data_dir(replica) / "tmp"

    def copy_arriving():
        assert not result, f"the upload ended before its replica copy was seen: {result}"
        return any(replica_tmp.iterdir())

    wait_for(copy_arriving, 60, interval=0.005, what="the replica copy to start")
    cluster.kill(replica)
    t.join(120)
    assert not t.is_alive() and "error" not in result, result
    r = result["r"]
    assert r.status == 200, r  # acknowledged: the origin has it; the replica missed it
    record = r.json()
    v = first["version"] + 1
    assert record["version"] == v and record["stale"] == [replica] and record["under_replicated"]
    assert copy_on_disk(cluster, replica, path).read_bytes() == old  # never half of each

    cluster.restart(replica)  # stale, not corrupt: brought up to date, then running
    wait_seen(cluster, others(cluster, replica), replica, "running", VERIFY, never=("failed",))
    assert no_temp_files(cluster, replica)
    assert hashlib.sha256(copy_on_disk(cluster, replica, path).read_bytes()).hexdigest() == sha(new)
    wait_current(cluster, api, path, v)
    r = get_at(api, replica, path)
    assert r.status == 200 and r.headers["X-SecuriFile-Version"] == str(v)
    assert sha(r.body) == sha(new)
    assert_readable(api, {path: new}, cluster.names)


# -- tampered, stale and replayed copies --------------------------------------------------

def _restart_with_tampered_copy(cluster, api, path, data):
    """Store ``path`` with its origin on node1, stop node1, flip bytes in its copy, start it.

    Returns (origin, replica holder, the third node).
    """
    origin, holder = holders_of(put_ok(api, "node1", path, data))
    third = others(cluster, origin, holder)[0]
    cluster.kill(origin)
    wait_seen(cluster, [holder, third], origin, "down")
    copy = copy_on_disk(cluster, origin, path)
    with open(copy, "r+b") as f:  # same size, some bytes flipped
        f.seek(len(data) // 2)
        f.write(bytes(b ^ 0xFF for b in data[len(data) // 2:len(data) // 2 + 64]))
    assert copy.stat().st_size == len(data)
    cluster.start_node(origin)
    return origin, holder, third


def test_a_node_restarted_with_a_tampered_copy_fails_until_repaired_offline(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    path, data = "alice/tamper/doc.bin", os.urandom(100_000)
    files = {path: data}
    node, holder, third = _restart_with_tampered_copy(cluster, api, path, data)

    wait_seen(cluster, [holder], node, "failed", VERIFY, never=("running",))
    wait_own(cluster, node, "failed", never=("running",))
    failed = wait_for(lambda: changes(admin, node, holder, "verifying", "failed"),
                      what="the failure reported")
    assert any("1 corrupt" in h["detail"] for h in failed), failed
    # With kept peer connections its peers can fail it within a few tenths of a second of
    # its start, before its own first heartbeat round: until it has heard from a majority
    # it answers 503 not_synced, then server_not_running.
    wait_for(lambda: (cluster.status(node) or {}).get("quorum"), VERIFY,
             what=f"{node} to hear from a majority")
    # It refuses users; they read the file from the other holder.
    r = api.get(node, path)
    assert r.status == 503 and error_of(r)["code"] == "server_not_running", r
    assert api.put(node, "alice/tamper/new.txt", b"x").status == 503
    served_by, r = api.follow(holder, "GET", path)
    assert (served_by, r.status, r.body) == (holder, 200, data)
    # Heartbeats go on to it; only a return from down opens the question again.
    assert view(cluster, holder, node) == view(cluster, node, node) == "failed"

    # The administrator takes it offline: it answers nobody, the others see it down.
    r = admin.call("POST", f"/api/v1/servers/{node}/offline")
    assert r.status == 200, r
    wait_own(cluster, node, "offline")
    wait_seen(cluster, [holder, third], node, "down")
    wait_for(lambda: listed(admin, node) == "offline", what=f"{node} listed offline")
    assert servers(admin)[node]["admin_state"] == "offline"
    assert_readable(api, files, [holder, third])

    # Repaired by hand, put back online: verified again, then running.
    copy_on_disk(cluster, node, path).write_bytes(data)
    r = admin.call("POST", f"/api/v1/servers/{node}/online")
    assert r.status == 200, r
    wait_seen(cluster, [holder, third], node, "running", VERIFY, never=("failed",))
    wait_own(cluster, node, "running", never=("failed",))
    passed = wait_for(lambda: changes(admin, node, holder, "verifying", "running"),
                      what="the passed challenge reported")
    assert any(h["detail"].startswith("1 ok") for h in passed), passed
    wait_for(lambda: listed(admin, node) == "running", what=f"{node} running in the database")
    r = get_at(api, node, path)
    assert r.status == 200 and r.body == data
    assert_readable(api, files, cluster.names)


def test_a_failing_verdict_after_the_others_passed_still_fails_the_node(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    path, data = "alice/tamper/late.bin", os.urandom(30_000)
    node, holder = holders_of(put_ok(api, "node1", path, data))
    third = others(cluster, node, holder)[0]
    cluster.kill(node)
    wait_seen(cluster, [holder, third], node, "down")
    copy = copy_on_disk(cluster, node, path)
    copy.write_bytes(os.urandom(len(data)))
    cluster.signal(holder, signal.SIGSTOP)  # hung, the only node that can check the copy
    try:
        cluster.start_node(node)
        wait_seen(cluster, [third], node, "running", VERIFY)  # nothing to check: passed
        wait_for(lambda: view(cluster, node, holder) == "down", DETECT,
                 what=f"{node} to see {holder} down")
    finally:
        cluster.signal(holder, signal.SIGCONT)
    wait_seen(cluster, [holder], node, "failed", VERIFY)
    wait_own(cluster, node, "failed", 5)
    assert api.get(node, path).status == 503


def test_a_quick_offline_repair_online_is_verified_again(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    path, data = "alice/tamper/quick.bin", os.urandom(30_000)
    node, holder, third = _restart_with_tampered_copy(cluster, api, path, data)
    wait_seen(cluster, [holder], node, "failed", VERIFY)
    wait_own(cluster, node, "failed")
    downs = len(changes(admin, node, holder, new="down"))

    # An administrator's script: offline, put the right bytes back, online at once.
    assert admin.call("POST", f"/api/v1/servers/{node}/offline").status == 200
    copy_on_disk(cluster, node, path).write_bytes(data)
    assert admin.call("POST", f"/api/v1/servers/{node}/online").status == 200
    wait_own(cluster, node, "verifying")
    # It did not miss enough beats to be down: the holder still has it failed, or has
    # already challenged it again (one file takes a few milliseconds).
    assert view(cluster, holder, node) in ("failed", "verifying", "running")
    wait_own(cluster, node, "running", 6)  # a challenge of one file takes well under that
    assert len(changes(admin, node, holder, new="down")) == downs
    assert get_at(api, node, path).body == data


def test_a_failed_node_is_never_a_redirect_target(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    path, data = "alice/tamper/redirect.bin", os.urandom(50_000)
    node, holder, third = _restart_with_tampered_copy(cluster, api, path, data)
    wait_seen(cluster, [holder], node, "failed", VERIFY)
    wait_own(cluster, node, "failed")
    wait_for(lambda: view(cluster, third, node) in ("running", "failed"),
             what=f"{third}'s verdict on {node}")
    # node is the file's origin and refuses users; the replica holder is running.
    served_by, r = api.follow(third, "GET", path)
    assert (served_by, r.status) == (holder, 200), (served_by, r)


def test_a_failed_node_is_failed_in_the_database(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    path, data = "alice/tamper/db.bin", os.urandom(50_000)
    node, holder, _third = _restart_with_tampered_copy(cluster, api, path, data)
    wait_own(cluster, node, "failed", never=("running",))
    wait_for(lambda: changes(admin, node, node, new="failed"), what=f"{node}'s own report")
    wait_for(lambda: listed(admin, node) == "failed", 5, what=f"{node} failed in the database")


def test_a_node_that_missed_a_modification_is_stale_not_failed(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    path = "alice/stale/notes.txt"
    old, new = os.urandom(150_000), os.urandom(170_000)
    first = put_ok(api, "node1", path, old)
    origin, replica = holders_of(first)
    cluster.kill(replica)
    wait_seen(cluster, others(cluster, replica), replica, "down")
    record = put_ok(api, origin, path, new)
    v = first["version"] + 1
    assert record["version"] == v and record["stale"] == [replica]
    assert copy_on_disk(cluster, replica, path).read_bytes() == old

    cluster.start_node(replica)
    wait_own(cluster, replica, "running", never=("failed",))
    wait_seen(cluster, others(cluster, replica), replica, "running", VERIFY, never=("failed",))
    assert copy_on_disk(cluster, replica, path).read_bytes() == new
    wait_current(cluster, api, path, v)
    r = get_at(api, replica, path)
    assert (r.status, r.headers["X-SecuriFile-Version"], r.body) == (200, str(v), new)
    fixed = wait_for(lambda: changes(admin, replica, origin, "verifying", "running"),
                     what="the challenge reported")
    assert any(h["detail"].startswith("1 stale") for h in fixed), fixed
    assert not changes(admin, replica, new="failed")
    assert_readable(api, {path: new}, cluster.names)


def test_a_copy_whose_digest_is_replayed_without_its_bytes_fails(make_cluster):
    """The node's digest cache is made to believe a garbled copy unchanged (its stat key
    rewritten while it was down): the digest it answers is right, the keyed hash over the
    ranges the challenger picks is not."""
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    path, data = "alice/replay/ledger.bin", os.urandom(64_000)
    origin, replica = holders_of(put_ok(api, "node1", path, data))
    cluster.kill(replica)
    wait_seen(cluster, others(cluster, replica), replica, "down")
    copy = copy_on_disk(cluster, replica, path)
    copy.write_bytes(os.urandom(len(data)))
    db = sqlite3.connect(cluster.cfg.node_data_dir(replica) / "locations.sqlite3")
    try:
        owner, rel = path.split("/", 1)
        (cached,) = db.execute("SELECT digest FROM copies WHERE owner = ? AND path = ?",
                               (owner, rel)).fetchone()
        assert cached == sha(data)
        db.execute("UPDATE copies SET stat_key = ? WHERE owner = ? AND path = ?",
                   (stat_key(copy), owner, rel))
        db.commit()
    finally:
        db.close()

    cluster.start_node(replica)
    wait_seen(cluster, [origin], replica, "failed", VERIFY, never=("running",))
    wait_own(cluster, replica, "failed", never=("running",))
    failed = wait_for(lambda: changes(admin, replica, origin, "verifying", "failed"),
                      what="the failure reported")
    assert any(h["detail"].startswith("1 replayed") for h in failed), failed
    assert api.get(replica, path).status == 503
    assert_readable(api, {path: data}, [origin])


class _Store:
    def __init__(self, root):
        self.root = root

    def path_for(self, fp):
        return self.root / fp.owner / fp.rel


class _Copies:
    """What answer_challenge reads and writes of a node's copies table; every record names
    the challenger as a holder."""

    def __init__(self, rows):
        self.rows = {k: CopyRecord(v, d, d, key) for k, (v, d, key) in rows.items()}

    def copy_records(self, fps):
        return {(fp.owner, fp.rel): self.rows[(fp.owner, fp.rel)] for fp in fps
                if (fp.owner, fp.rel) in self.rows}

    def named_holder(self, fps, server):
        return {(fp.owner, fp.rel) for fp in fps}

    def copy_record(self, fp):
        return self.rows.get((fp.owner, fp.rel))

    def update_disk_digests(self, updates):
        for fp, digest, key in updates:
            self.rows[(fp.owner, fp.rel)] = self.rows[(fp.owner, fp.rel)]._replace(
                disk_digest=digest, stat_key=key)


def test_an_answer_to_another_nonce_or_from_other_bytes_does_not_pass(tmp_path):
    rng = random.Random(7)
    mine, theirs = _Store(tmp_path / "mine"), _Store(tmp_path / "theirs")
    data = os.urandom(10_000)
    locs = []
    for name in ("same.bin", "garbled.bin", "old.bin", "corrupt.bin"):
        for store in (mine, theirs):
            (store.root / "alice").mkdir(parents=True, exist_ok=True)
            (store.root / "alice" / name).write_bytes(data)
        locs.append(Location("alice", name, "n1", sha(data), "sha256", len(data), version=3))
    rows = {("alice", loc.path): (3, sha(data), stat_key(theirs.path_for(loc.file_path)))
            for loc in locs}
    rows[("alice", "old.bin")] = (2, sha(data), rows[("alice", "old.bin")][2])
    garbled = theirs.path_for(locs[1].file_path)
    garbled.write_bytes(os.urandom(len(data)))
    rows[("alice", "garbled.bin")] = (3, sha(data), stat_key(garbled))  # the cache is fooled
    corrupt = theirs.path_for(locs[3].file_path)
    corrupt.write_bytes(os.urandom(len(data)))  # changed on disk: the cache is not used
    copies = _Copies(rows)
    by_key = {(loc.owner, loc.path): loc for loc in locs}

    challenge = new_challenge("n1", locs, rng)
    answer = answer_challenge(theirs, copies, challenge)
    result = check_answer(mine, by_key, challenge, answer, ChallengeResult())
    assert result.outcomes == {("alice", "same.bin"): OK, ("alice", "garbled.bin"): REPLAYED,
                               ("alice", "old.bin"): STALE, ("alice", "corrupt.bin"): CORRUPT}
    assert not result.passed and result.stale == [("alice", "old.bin")]

    # A right answer to an earlier challenge is no answer to a new one.
    again = new_challenge("n1", locs[:1], rng)
    replayed = check_answer(mine, by_key, again, answer, ChallengeResult())
    assert replayed.outcomes == {("alice", "same.bin"): REPLAYED}


# -- locks and writers --------------------------------------------------------------------

def test_a_second_writer_anywhere_is_refused_at_once_with_the_holder(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    path = "alice/locks/shared.txt"
    first, second = os.urandom(300_000), os.urandom(200_000)
    v = put_ok(api, "node1", path, b"version 1")["version"]
    origin = "node1"

    up = SlowUpload(api, origin, path, len(first))
    up.wait_continue()  # node1 holds the lock on every node now
    up.send(first[:1000])
    for node in cluster.names:
        r = api.put(node, path, second)
        assert r.status == 423, (node, r)
        assert error_of(r)["holder"] == "alice" and error_of(r)["node"] == origin, r
    up.send(first[1000:])
    r = up.response()
    up.close()
    assert r.status == 200 and r.json()["version"] == v + 1, r
    assert r.json()["digest"] == sha(first), r
    assert_readable(api, {path: first}, cluster.names)
    # Released everywhere after the answer: the next writer goes through.
    _node, r = wait_for(lambda: unlocked_put(api, "node3", path, second), 5,
                        what="the lock released")
    assert r.status == 200 and r.json()["version"] == v + 2, r
    assert_readable(api, {path: second}, cluster.names)


def test_a_writer_whose_lock_a_peer_refuses_gets_423_with_the_holder(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    path = "alice/locks/new.bin"
    # node3 is hung while node1 takes the lock for a new file: node3 alone does not hold it.
    cluster.signal("node3", signal.SIGSTOP)
    try:
        wait_seen(cluster, ["node1", "node2"], "node3", "down")
        up = SlowUpload(api, "node1", path, 100_000)
        up.wait_continue()
    finally:
        cluster.signal("node3", signal.SIGCONT)
    wait_seen(cluster, ["node1", "node2"], "node3", "running", VERIFY)
    up.send(b"x" * 1000)
    # node3 knows no such file and no lock: it coordinates, and node1 and node2 refuse it.
    r = api.put("node3", path, b"the second writer")
    up.send(b"x" * 99_000)
    first = up.response()
    up.close()
    assert first.status == 201, first
    assert r.status == 423, r
    assert error_of(r)["holder"] == "alice" and error_of(r)["node"] == "node1", r
    assert_readable(api, {path: b"x" * 100_000}, cluster.names)


def test_two_writers_racing_on_two_nodes_leave_one_whole_version(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    outcomes = []
    for round_ in range(4):
        path = f"alice/race/{round_}.bin"
        base = 0
        if round_ % 2:  # odd rounds: an existing file, modified through two nodes at once
            base = put_ok(api, "node1", path, b"before")["version"]
        datas = [os.urandom(512 * 1024) for _ in range(2)]
        barrier = threading.Barrier(2, timeout=20)
        results = [None, None]

        def write(i, node):
            barrier.wait()
            try:
                results[i] = api.follow(node, "PUT", path, body=datas[i])[1]
            except Exception as e:  # surfaced below
                results[i] = e

        threads = [threading.Thread(target=write, args=(i, n))
                   for i, n in enumerate(["node1", "node2"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert all(isinstance(r, Response) for r in results), results
        won = [i for i, r in enumerate(results) if r.status in (200, 201)]
        for i, r in enumerate(results):
            if i not in won:
                assert r.status == 423 and error_of(r)["holder"] == "alice", r
        outcomes.append(len(won))
        _node, final = api.follow("node3", "GET", path)
        if not won:
            assert final.status == (200 if round_ % 2 else 404)
            continue
        assert final.status == 200 and final.body in [datas[i] for i in won]
        version = int(final.headers["X-SecuriFile-Version"])
        assert version == base + len(won), version
        assert_readable(api, {path: final.body}, cluster.names)
    assert max(outcomes) <= 2


def test_a_dead_writers_lock_runs_out_with_its_lease(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1, lock_lease_seconds=LEASE)
    api = Api(cluster)
    path = "alice/lease/file.bin"
    before = os.urandom(80_000)
    first = put_ok(api, "node1", path, before)
    origin, replica = holders_of(first)
    third = others(cluster, origin, replica)[0]

    up = SlowUpload(api, origin, path, 1 << 20)
    up.wait_continue()
    up.send(os.urandom(4096))
    r = api.put(third, path, b"too early")
    assert r.status == 423 and error_of(r)["node"] == origin, r
    cluster.kill(origin)  # mid-upload: nobody releases, nobody renews
    up.close()

    after = os.urandom(90_000)
    _node, r = wait_for(lambda: unlocked_put(api, third, path, after), LEASE + DETECT,
                        interval=0.1, what="the dead writer's lock to run out")
    assert r.status == 200, r
    record = r.json()
    assert record["version"] == first["version"] + 1 and record["digest"] == sha(after)
    assert record["stale"] == [origin]
    assert_readable(api, {path: after}, [replica, third])


def test_with_the_origin_down_a_modification_goes_to_the_first_replica(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api = Api(cluster)
    path = "alice/failover/report.txt"
    before, after = os.urandom(120_000), os.urandom(130_000)
    first = put_ok(api, "node1", path, before)
    origin, replica = holders_of(first)
    third = others(cluster, origin, replica)[0]
    cluster.kill(origin)
    wait_seen(cluster, [replica, third], origin, "down")

    redirect = api.put(third, path, after)
    assert redirect.status == 307, redirect
    assert api.node_for(redirect.headers["Location"].split("/files/")[0]) == replica
    served_by, r = api.follow(third, "PUT", path, body=after)
    assert (served_by, r.status) == (replica, 200), r  # the priority-1 replica coordinates
    record = r.json()
    v = first["version"] + 1
    assert record["version"] == v and record["origin"] == origin and record["stale"] == [origin]
    assert_readable(api, {path: after}, [replica, third])

    cluster.restart(origin)  # it is brought up to date before it serves again
    assert copy_on_disk(cluster, origin, path).read_bytes() == after
    wait_caught_up(cluster, api, origin, [path])
    wait_current(cluster, api, path, v)
    # The others send users to it again once they have seen it running (a heartbeat or so).
    served_by, r = wait_for(lambda: (lambda f: f if f[0] == origin else None)(
        api.follow(third, "GET", path)), 15, what="the origin serving again")
    assert (served_by, r.status, r.body) == (origin, 200, after)
    assert r.headers["X-SecuriFile-Version"] == str(v)
    assert_readable(api, {path: after}, cluster.names)


# -- the administrator ----------------------------------------------------------------------

def admin_cli(cluster, *args):
    exe = Path(sys.executable).with_name("securifile-admin")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "securifile.admin.main"]
    return subprocess.run(cmd + ["--config", str(cluster.config_path), *args],
                          capture_output=True, text=True, timeout=60)


def test_offline_and_online_through_the_api_and_the_command_line(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    files = {}
    for i, node in enumerate(cluster.names):
        files[f"alice/away/{node}.bin"] = os.urandom(20_000 + i)
        put_ok(api, node, f"alice/away/{node}.bin", files[f"alice/away/{node}.bin"])
    path = "alice/away/node3.bin"

    assert AdminApi(cluster, "alice").call("POST", "/api/v1/servers/node3/offline").status == 403
    r = admin.call("POST", "/api/v1/servers/node3/offline")
    assert r.status == 200, r
    wait_own(cluster, "node3", "offline")
    wait_seen(cluster, ["node1", "node2"], "node3", "down")
    wait_for(lambda: listed(admin, "node3") == "offline", what="node3 listed offline")
    assert api.get("node3", path).status == 503
    assert_readable(api, files, ["node1", "node2"])
    # Modified while it is away: its copy is stale when it comes back.
    files[path] = os.urandom(25_000)
    _node, r = api.follow("node1", "PUT", path, body=files[path])
    assert r.status == 200 and r.json()["stale"] == ["node3"], r

    r = admin.call("POST", "/api/v1/servers/node3/online")
    assert r.status == 200, r
    wait_seen(cluster, ["node1", "node2"], "node3", "running", VERIFY, never=("failed",))
    wait_own(cluster, "node3", "running", never=("failed",))
    assert copy_on_disk(cluster, "node3", path).read_bytes() == files[path]
    wait_for(lambda: listed(admin, "node3") == "running", what="node3 running in the database")

    r = admin_cli(cluster, "server", "offline", "node2")
    assert r.returncode == 0 and "node2 is offline" in r.stdout, r.stderr
    wait_seen(cluster, ["node1", "node3"], "node2", "down")
    wait_for(lambda: listed(admin, "node2") == "offline", what="node2 listed offline")
    assert_readable(api, files, ["node1", "node3"])
    r = admin_cli(cluster, "server", "online", "node2")
    assert r.returncode == 0 and "node2 is online" in r.stdout, r.stderr
    wait_seen(cluster, ["node1", "node3"], "node2", "running", VERIFY, never=("failed",))
    wait_for(lambda: {s["status"] for s in servers(admin).values()} == {"running"},
             what="every server running in the database")
    assert_readable(api, files, cluster.names)


def test_with_the_admin_server_down_owners_work_on_and_the_database_catches_up(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    files = {"alice/adm/a.bin": os.urandom(10_000)}
    first = put_ok(api, "node1", "alice/adm/a.bin", files["alice/adm/a.bin"])
    origin, replica = holders_of(first)
    third = others(cluster, origin, replica)[0]
    cluster.kill("admin")

    # A node dies while the admin server is away; owners go on reading and writing.
    cluster.kill(origin)
    wait_seen(cluster, [replica, third], origin, "down")
    files["alice/adm/a.bin"] = os.urandom(11_000)
    _node, r = api.follow(third, "PUT", "alice/adm/a.bin", body=files["alice/adm/a.bin"])
    assert r.status == 200 and r.json()["version"] == first["version"] + 1, r
    files["alice/adm/b.bin"] = os.urandom(12_000)
    b = put_ok(api, third, "alice/adm/b.bin", files["alice/adm/b.bin"])
    assert_readable(api, files, [replica, third])

    cluster.start_admin()
    cluster.wait_ready(["admin"])
    admin = AdminApi(cluster)
    wait_for(lambda: listed(admin, origin) == "down", what=f"{origin} down in the database")

    def catalogue():
        r = admin.get("/api/v1/users/alice/files")
        assert r.status == 200, r
        return {f["path"]: (f["digest"], f["version"]) for f in r.json()["files"]}

    wait_for(lambda: catalogue() == {
        "adm/a.bin": (sha(files["alice/adm/a.bin"]), first["version"] + 1),
        "adm/b.bin": (sha(files["alice/adm/b.bin"]), b["version"])},
             what="the catalogue to catch up")

    cluster.restart(origin)
    wait_caught_up(cluster, api, origin, files)
    wait_for(lambda: {s["status"] for s in servers(admin).values()} == {"running"},
             what="every server running in the database")
    assert_readable(api, files, cluster.names)


def report_as(cluster, observer, subject, old, new, tag):
    """A status report sent as ``observer`` would (its certificate), with detail ``tag``."""
    layout = cluster.layout
    ctx = client_context(layout.ca_cert, layout.server_cert(observer), layout.server_key(observer))
    u = urlsplit(cluster.cfg.admin_url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
    report = {"id": f"{observer}:{tag}", "server": observer, "events": [
        {"type": "status", "subject": subject, "old": old, "new": new, "detail": tag,
         "at": time.time()}]}
    try:
        conn.request("POST", "/api/v1/reports", body=json.dumps({"reports": [report]}),
                     headers={"Content-Type": "application/json", "X-SecuriFile-Node": observer})
        r = conn.getresponse()
        assert r.status == 200, r.read()
        r.read()
    finally:
        conn.close()


def test_the_database_shows_a_server_down_only_when_two_running_observers_agree(make_cluster):
    cluster = settled(make_cluster, servers=4, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    files = {"alice/agg/x.bin": os.urandom(5000)}
    put_ok(api, "node4", "alice/agg/x.bin", files["alice/agg/x.bin"])
    wait_for(lambda: {s["status"] for s in servers(admin).values()} == {"running"},
             what="every server running in the database")

    # One observer alone (as if cut off from node4) reports it down: not enough.
    report_as(cluster, "node2", "node4", "running", "down", "partition-1")
    assert changes(admin, "node4", "node2", new="down")
    assert listed(admin, "node4") == "running"
    report_as(cluster, "node2", "node4", "down", "running", "partition-2")  # healed

    cluster.signal("node4", signal.SIGSTOP)
    try:
        wait_for(lambda: listed(admin, "node4") == "down", DETECT, interval=0.02,
                 what="node4 down in the database")
        agreeing = {h["observer"] for h in changes(admin, "node4", new="down")
                    if h["observer"] not in ("cluster", "node4")
                    and not h["detail"].startswith("partition")}
        assert len(agreeing) >= 2, history(admin, "node4")
        assert {listed(admin, n) for n in ["node1", "node2", "node3"]} == {"running"}
        # Two observers are enough for the database; reads through the third wait until it
        # has noticed too (until then it would still send users to the hung node).
        wait_seen(cluster, ["node1", "node2", "node3"], "node4", "down", DETECT)
        assert_readable(api, files, ["node1", "node2", "node3"])
    finally:
        cluster.signal("node4", signal.SIGCONT)
    wait_seen(cluster, ["node1", "node2", "node3"], "node4", "running", VERIFY)
    wait_for(lambda: listed(admin, "node4") == "running", what="node4 running in the database")
    assert_readable(api, files, cluster.names)
