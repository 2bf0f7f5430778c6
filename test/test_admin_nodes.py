"""Probe tests of nodes and the admin server together, on one real cluster per module.

Revocations reach every node within the decision cache's lifetime; with the admin server
killed, owners keep their files and shared access fails closed; node reports keep the
catalogue exactly equal to what the nodes store, also across an admin outage and when a
deletion is reported before the creation it undoes; storage samples arrive; expired and
removed accounts are refused even with a token still valid.
Each test makes its own users, so its namespace (and its usage counters) are its own.
"""
import hashlib
import http.client
import json
import os
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlsplit

import pytest
from sqlalchemy import update

from securifile.admin import db
from securifile.admin.models import User
from securifile.common.tls import client_context
from securifile.launcher.certs import write_token

from .clusters import FAST, start_cluster
from .helpers import AdminApi, Api, disk_copy, wait_for

NODES = ("node1", "node2", "node3")
ADMIN = "admin"  # the admin server's process name in Cluster.procs
# conftest's fast settings, with more misses before a peer counts as down: this cluster lives
# for the whole module, and on a loaded machine a node that stalls for 0.6 s would be marked
# down and lose its replicas or redirects for a moment. Nothing here waits for a down mark.
STEADY = {**FAST, "heartbeat_misses": 10}


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory, "admin-nodes", **STEADY)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(module_cluster):
    """The module's cluster, with every process running again if a test left one dead."""
    c = module_cluster
    dead = [name for name, proc in c.procs.items() if proc.poll() is not None]
    for name in dead:
        c.restart(name)
    all_running(c)
    return c


@pytest.fixture
def root(cluster):
    return AdminApi(cluster)


def all_running(cluster):
    api = Api(cluster)
    wait_for(lambda: all(api.sees(a, b, "running") for a in NODES for b in NODES if a != b),
             timeout=20, what="every node to see every other running")


def new_user(root, name, **kw):
    root.add_user(name, **kw)
    return root.as_user(name)


def acl(target):
    return "/api/v1/acl/" + quote(target, safe="/")


def error_code(r):
    return r.json()["error"]["code"]


def eventually(check, timeout=10.0, what="condition"):
    """Poll ``check`` (None when satisfied, else a description of what differs); on timeout
    fail with the last difference seen, not just 'timed out'."""
    last = {}

    def ok():
        last["diff"] = check()
        return last["diff"] is None

    try:
        wait_for(ok, timeout=timeout, interval=0.1, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last difference: {last.get('diff')}") from None


def start_admin(cluster):
    cluster.start_admin()
    wait_for(lambda: cluster.status(ADMIN), timeout=30, what="the admin server to answer")


# -- (a) revocation reaches every node ---------------------------------------------------------


def test_revoked_right_stops_working_on_every_node_within_seconds(cluster, root):
    alice_admin, alice = AdminApi(cluster, "alice"), Api(cluster)
    rex = new_user(root, "rex").node_api()
    assert alice.put("node1", "alice/rx/report.txt", b"for rex").status == 201
    assert alice_admin.call("PUT", acl("alice/rx/"), {"username": "rex", "role": "reader"}).status == 200
    # Authorised everywhere: the origin serves, the others send him there.
    for node in NODES:
        assert rex.request(node, "GET", "alice/rx/report.txt").status in (200, 307), node
        assert rex.follow(node, "GET", "alice/rx/report.txt")[1].body == b"for rex"

    assert alice_admin.call("DELETE", acl("alice/rx/") + "?username=rex").status == 204
    revoked = time.monotonic()
    for node in NODES:
        wait_for(lambda: rex.request(node, "GET", "alice/rx/report.txt").status == 403,
                 timeout=revoked + 5 - time.monotonic(), what=f"{node} to refuse rex")
    r = rex.request("node2", "GET", "alice/rx/report.txt")
    assert error_code(r) == "forbidden"
    # A refusal is cached no longer than a grant: granting again works again, everywhere.
    assert alice_admin.call("PUT", acl("alice/rx/"), {"username": "rex", "role": "reader"}).status == 200
    granted = time.monotonic()
    for node in NODES:
        wait_for(lambda: rex.request(node, "GET", "alice/rx/report.txt").status in (200, 307),
                 timeout=granted + 5 - time.monotonic(), what=f"{node} to let rex read again")


# -- (b) admin server down: owners keep access, shared access fails closed --------------------


def test_admin_down_owner_keeps_her_files_and_shared_access_fails_closed(cluster, root):
    alice_admin, alice_cert = AdminApi(cluster, "alice"), Api(cluster)
    alice_token = alice_admin.node_api()
    sam = new_user(root, "sam").node_api()
    assert alice_cert.put("node1", "alice/shared/plan.txt", b"plan v1").status == 201
    r = alice_admin.call("PUT", acl("alice/shared/"), {"username": "sam", "role": "editor"})
    assert r.status == 200, r
    assert sam.follow("node2", "GET", "alice/shared/plan.txt")[1].body == b"plan v1"

    cluster.kill(ADMIN)
    assert cluster.status(ADMIN) is None
    # The owner, with her certificate or her token: create, modify, read, list, delete.
    for alice, name in ((alice_cert, "cert"), (alice_token, "token")):
        r = alice.put("node2", f"alice/offline/{name}.txt", b"made while the admin was down")
        assert r.status == 201, r
        _, r = alice.follow("node3", "PUT", "alice/shared/plan.txt", body=f"plan by {name}".encode())
        assert r.status == 200, r
        got = alice.follow("node3", "GET", "alice/shared/plan.txt")[1]
        assert got.body == f"plan by {name}".encode()
        listing = alice.request("node1", "GET", "/files/alice/offline/", raw_path=True)
        assert f"offline/{name}.txt" in {f["path"] for f in listing.json()["files"]}
        assert alice.request("node3", "DELETE", f"alice/offline/{name}.txt").status == 204
    # The shared user: a clear 503 from every node once the cached decision has expired.
    for node in NODES:
        for method, path in (("GET", "alice/shared/plan.txt"), ("HEAD", "alice/shared/plan.txt"),
                             ("GET", "/files/alice/shared/")):
            raw = path.startswith("/")
            wait_for(lambda: sam.request(node, method, path, raw_path=raw).status == 503,
                     timeout=5, what=f"{node} to refuse {method} {path} without the admin")
        r = sam.request(node, "GET", "alice/shared/plan.txt")
        assert error_code(r) == "admin_unreachable" and "admin server" in r.json()["error"]["message"]
        r = sam.request(node, "PUT", "alice/shared/plan.txt", body=b"sam's plan")
        assert (r.status, error_code(r)) == (503, "admin_unreachable")
    assert alice_cert.follow("node1", "GET", "alice/shared/plan.txt")[1].body == b"plan by token"

    start_admin(cluster)
    for node in NODES:
        wait_for(lambda: sam.request(node, "GET", "alice/shared/plan.txt").status in (200, 307),
                 timeout=5, what=f"{node} to let sam in again")
    assert sam.follow("node1", "GET", "alice/shared/plan.txt")[1].body == b"plan by token"
    assert sam.follow("node3", "PUT", "alice/shared/plan.txt", body=b"sam's plan")[1].status == 200


# -- (c), (d) the catalogue equals what the nodes store ----------------------------------------


class Ledger:
    """What the nodes acknowledged for one user's files: path -> the last upload answer."""

    def __init__(self, cluster, owner, api):
        self.cluster, self.owner, self.api = cluster, owner, api
        self.files = {}

    def put(self, node, rel, data):
        _node, r = self.api.follow(node, "PUT", f"{self.owner}/{rel}", body=data)
        assert r.status in (200, 201), r
        body = r.json()
        assert body["digest"] == hashlib.sha256(data).hexdigest() and body["size"] == len(data)
        self.files[rel] = body
        return body

    def delete(self, node, rel):
        r = self.api.request(node, "DELETE", f"{self.owner}/{rel}")
        assert r.status == 204, r
        del self.files[rel]

    def expected(self):
        return {rel: {"owner": self.owner, "path": rel, "size": f["size"], "digest": f["digest"],
                      "algorithm": f["algorithm"], "version": f["version"], "origin": f["origin"],
                      "replicas": sorted(f["replicas"], key=lambda p: p["priority"]),
                      "modified": f["modified"]}
                for rel, f in self.files.items()}


def catalogue_diff(root, ledger, as_owner):
    """None when the admin's views of the owner's files equal the ledger; else what differs."""
    want = ledger.expected()
    owned = root.get(f"/api/v1/users/{ledger.owner}/files").json()
    listed = as_owner.get(f"/api/v1/files?prefix={ledger.owner}/&recursive=1").json()
    users = {u["username"]: u for u in root.get("/api/v1/users").json()["users"]}
    usage = (users[ledger.owner]["file_count"], users[ledger.owner]["total_bytes"])
    total = sum(f["size"] for f in want.values())
    if usage != (len(want), total) or (owned["file_count"], owned["total_bytes"]) != usage:
        return f"usage {usage} / {owned['file_count'], owned['total_bytes']}, want {(len(want), total)}"
    for view, files in (("owned", owned["files"]), ("listed", listed["files"])):
        paths = [f["path"] for f in files]
        if len(paths) != len(set(paths)):
            return f"{view}: duplicates in {paths}"
        got = {f["path"]: f for f in files}
        if set(got) != set(want):
            return f"{view}: paths {sorted(got)}, want {sorted(want)}"
        for rel, w in want.items():
            g = got[rel]
            modified = datetime.fromisoformat(g["modified"]).timestamp()
            if abs(modified - w["modified"]) > 0.01:
                return f"{view} {rel}: modified {modified}, want {w['modified']}"
            shown = {k: g[k] for k in w if k != "modified"}
            if shown != {k: v for k, v in w.items() if k != "modified"}:
                return f"{view} {rel}: {shown}, want {w}"
            if g.get("role") != "owner" or g.get("under_replicated"):
                return f"{view} {rel}: role {g.get('role')}, " \
                    f"under_replicated {g.get('under_replicated')}"
    top = as_owner.get(f"/api/v1/files?prefix={ledger.owner}/").json()
    top_files = sorted(f["path"] for f in top["files"])
    top_folders = sorted({rel.split("/")[0] for rel in want if "/" in rel})
    if (top_files, sorted(top["folders"])) != (sorted(r for r in want if "/" not in r), top_folders):
        return f"top level: {top_files} and folders {top['folders']}"
    return None


def assert_nodes_store(ledger):
    """The ledger is what the nodes hold: every location map, and the bytes on each holder."""
    cluster, api = ledger.cluster, ledger.api
    want = ledger.expected()
    for node in NODES:
        listing = api.request(node, "GET", f"/files/{ledger.owner}/", raw_path=True).json()["files"]
        assert {f["path"]: (f["version"], f["digest"], f["origin"], f["replicas"]) for f in listing} \
            == {rel: (w["version"], w["digest"], w["origin"], w["replicas"]) for rel, w in want.items()}
    for rel, w in want.items():
        for holder in [w["origin"]] + [p["server"] for p in w["replicas"]]:
            on_disk = disk_copy(cluster, holder, ledger.owner, rel).read_bytes()
            assert hashlib.sha256(on_disk).hexdigest() == w["digest"], (holder, rel)


def test_node_reports_keep_the_catalogue_equal_to_what_is_stored(cluster, root):
    rita = new_user(root, "rita")
    ledger = Ledger(cluster, "rita", rita.node_api())
    ledger.put("node1", "a.txt", b"first")
    ledger.put("node2", "docs/b.bin", os.urandom(50_000))
    ledger.put("node3", "docs/deep/c.txt", b"deep down")
    ledger.put("node1", "gone.txt", b"short-lived")
    # Modifications through a node that is not the origin are redirected there.
    ledger.put("node3", "a.txt", b"second, longer version")
    ledger.put("node2", "a.txt", b"third")
    eventually(lambda: catalogue_diff(root, ledger, rita), what="the catalogue to show the uploads")
    ledger.delete("node2", "gone.txt")
    ledger.put("node1", "docs/b.bin", b"shrunk")
    eventually(lambda: catalogue_diff(root, ledger, rita), what="the catalogue to follow")
    assert_nodes_store(ledger)
    assert [f["version"] for f in ledger.expected().values()] == [3, 2, 1]


def test_catalogue_is_right_after_the_admin_was_briefly_down(cluster, root):
    dora = new_user(root, "dora")
    ledger = Ledger(cluster, "dora", dora.node_api())
    for node, rel in zip(NODES, ("a.txt", "b.txt", "c/c.txt")):
        ledger.put(node, rel, f"{rel} on {node}".encode())
    eventually(lambda: catalogue_diff(root, ledger, dora), what="the first uploads to arrive")

    cluster.kill(ADMIN)
    ledger.put("node2", "a.txt", b"a, modified once")
    ledger.put("node3", "a.txt", b"a, modified twice while the admin was away")
    ledger.delete("node2", "b.txt")
    ledger.delete("node1", "c/c.txt")  # held by node3: the tombstone comes from another node
    ledger.put("node1", "d.txt", b"new while down")
    ledger.put("node2", "e.txt", b"here and gone")
    ledger.delete("node2", "e.txt")
    ledger.put("node3", "f/f.txt", b"f v1")
    ledger.put("node1", "f/f.txt", b"f v2, through node1")
    for i in range(5):
        ledger.put(NODES[i % 3], f"many/{i}.txt", b"x" * (i + 1))
    start_admin(cluster)
    root = AdminApi(cluster)
    eventually(lambda: catalogue_diff(root, ledger, dora), timeout=15,
               what="the queued reports to bring the catalogue up to date")
    assert_nodes_store(ledger)


def _node_client(cluster, name):
    """Speak to the admin server as node ``name`` (its certificate), as a node's reporter does."""
    u = urlsplit(cluster.cfg.admin_url)
    ctx = client_context(cluster.layout.ca_cert, cluster.layout.server_cert(name),
                         cluster.layout.server_key(name))

    def post(reports):
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
        try:
            conn.request("POST", "/api/v1/reports", body=json.dumps({"reports": reports}),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()
    return post


def test_reports_are_applied_once_and_never_go_back_in_time(cluster, root):
    """A batch resent after a lost answer, or an old version arriving late, changes nothing."""
    post = _node_client(cluster, "node1")
    root.add_user("tess")  # a file list is only for an account that exists
    now = time.time()

    def record(version, size, deleted=False):
        return {"type": "file", "record": {
            "owner": "tess", "path": "replayed.txt", "origin": "node1", "digest": f"{version:064x}",
            "algorithm": "sha256", "size": size, "version": version, "modified": now + version,
            "deleted": deleted, "replicas": [{"server": "node2", "priority": 1}]}}

    def state():
        owned = root.get("/api/v1/users/tess/files").json()
        return owned["file_count"], owned["total_bytes"], [f["version"] for f in owned["files"]]

    v2 = {"id": "node1:test-2", "server": "node1", "events": [record(2, 200)]}
    assert post([v2]) == (200, {"received": 1, "applied": 1})
    assert post([v2]) == (200, {"received": 1, "applied": 0})
    assert state() == (1, 200, [2])
    old = {"id": "node1:test-1", "server": "node1", "events": [record(1, 100)]}
    assert post([old])[0] == 200
    assert state() == (1, 200, [2])
    gone = {"id": "node1:test-3", "server": "node1", "events": [record(3, 0, deleted=True)]}
    assert post([gone, gone])[1]["applied"] == 1
    assert state() == (0, 0, [])
    # A node reports only for itself.
    status, body = _node_client(cluster, "node2")([{"id": "x:1", "server": "node1", "events": []}])
    assert (status, body["error"]["code"]) == (403, "wrong_reporter")


# -- (e) storage samples -----------------------------------------------------------------------


def test_storage_samples_arrive_and_used_bytes_grow_after_an_upload(cluster, root):
    def latest(node):
        samples = root.get(f"/api/v1/servers/{node}/storage").json()["samples"]
        return samples[-1] if samples else None

    for node in NODES:
        s = wait_for(lambda: latest(node), timeout=10, what=f"a storage sample from {node}")
        assert s["used_bytes"] >= 0 and s["available_bytes"] > 0
        datetime.fromisoformat(s["t"])
    before = {node: latest(node)["used_bytes"] for node in NODES}
    since = datetime.now(timezone.utc)
    size = 300_000
    r = Api(cluster).put("node1", "alice/samples/big.bin", os.urandom(size))
    assert r.status == 201, r
    holders = ["node1"] + [p["server"] for p in r.json()["replicas"]]
    for node in holders:
        wait_for(lambda: latest(node)["used_bytes"] >= before[node] + size, timeout=10,
                 what=f"{node}'s samples to count the new file")
    fresh = root.get(f"/api/v1/servers/node1/storage?since={quote(since.isoformat())}").json()
    assert fresh["samples"] and all(datetime.fromisoformat(s["t"]) >= since for s in fresh["samples"])
    ts = [s["t"] for s in fresh["samples"]]
    assert ts == sorted(ts)

    def listed():
        servers = {s["name"]: s for s in root.get("/api/v1/servers").json()["servers"]}
        return all(servers[n]["used_bytes"] >= before[n] + size for n in holders) and servers
    servers = wait_for(listed, timeout=10, what="the server list to show the new usage")
    assert all(servers[n]["status"] == "running" and servers[n]["available_bytes"] > 0
               for n in NODES)



def connections_to(pid, port):
    """Local ports of ``pid``'s established TCP connections to loopback ``port`` (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for row in list(f)[1:]:
                cols = row.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def test_node_asks_and_reports_to_the_admin_server_over_kept_connections(cluster, root):
    """Access decisions and reports reuse the node's open mutual-TLS connections: one
    connection to the admin server lives through many rounds of both (a new one per call
    cost a TLS handshake on each side, several per upload)."""
    tina = new_user(root, "tina")
    ledger = Ledger(cluster, "tina", tina.node_api())
    pid, port = cluster.procs["node1"].pid, urlsplit(cluster.cfg.admin_url).port
    ledger.put("node1", "warm.txt", b"opens the connections")
    first = wait_for(lambda: connections_to(pid, port), timeout=10,
                     what="node1 to hold a connection to the admin server")
    seen = set(first)
    # Uploads spread over more than two decision-cache lifetimes (0.5 s) and many report
    # rounds (0.2 s): each asks the admin server again and reports the new file.
    started = time.monotonic()
    for i in range(30):
        ledger.put("node1", f"kept/{i}.txt", b"x" * i)
        seen |= connections_to(pid, port)
        if time.monotonic() - started > 2.0 and i >= 5:
            break
        time.sleep(0.1)
    eventually(lambda: catalogue_diff(root, ledger, tina), what="the catalogue to show the uploads")
    last = connections_to(pid, port)
    assert first & last, f"connections to the admin server replaced: first {first}, last {last}"
    assert len(seen | last) <= 3, f"new connections to the admin server: {sorted(seen | last)}"


# -- (f) accounts that may no longer act -------------------------------------------------------


def expire_in_database(cluster, username):
    """Shorten an account's validity to the past, as if its end date had come."""
    engine = db.make_engine(cluster.cfg.effective_database_url)
    try:
        with db.session_factory(engine).begin() as s:
            s.execute(update(User).where(User.username == username).values(
                valid_until=datetime.now(timezone.utc) - timedelta(minutes=1)))
    finally:
        engine.dispose()


def refused_everywhere(api, path, code, timeout=5):
    for node in NODES:
        for method, body in (("GET", None), ("PUT", b"more")):
            wait_for(lambda: api.request(node, method, path, body=body).status == 403,
                     timeout=timeout, what=f"{node} to refuse {method} {path}")
            r = api.request(node, method, path, body=body)
            assert error_code(r) == code, (node, method, r)
    return r


def test_expired_account_is_refused_even_with_a_valid_token(cluster, root):
    ellen = new_user(root, "ellen")
    node = ellen.node_api()
    assert node.put("node1", "ellen/mine.txt", b"mine").status == 201
    expire_in_database(cluster, "ellen")
    r = refused_everywhere(node, "ellen/mine.txt", "account_inactive")
    assert "expired" in r.json()["error"]["message"]
    # The token is still well signed and unexpired: the admin server refuses it too, and login
    # says why.
    r = ellen.get("/api/v1/me")
    assert (r.status, error_code(r)) == (403, "account_expired")
    r = root.call("POST", "/api/v1/login", {"username": "ellen", "password": "correct horse battery"})
    assert (r.status, error_code(r)) == (403, "account_expired")
    assert "expired" in r.json()["error"]["message"]


def test_account_that_runs_out_is_refused_with_a_provisioned_token(cluster, root):
    """A real end date passing, with a token minted for longer (``securifile-certs token``)."""
    root.add_user("brief", valid_days=2 / 86400)
    uid = root.get("/api/v1/users?username=brief").json()["users"][0]["id"]
    token = write_token(cluster.layout, "brief", days=1, uid=uid)
    node = Api(cluster, cert=False, token=token)
    refused_everywhere(node, "brief/notes.txt", "account_inactive", timeout=10)
    r = root.call("POST", "/api/v1/login", {"username": "brief", "password": "correct horse battery"})
    assert (r.status, error_code(r)) == (403, "account_expired")


def test_removed_account_is_refused_even_with_a_valid_token(cluster, root):
    remy = new_user(root, "remy")
    node = remy.node_api()
    assert node.put("node2", "remy/mine.txt", b"mine").status == 201
    alice_admin = AdminApi(cluster, "alice")
    r = alice_admin.call("PUT", acl("alice/for-remy/"), {"username": "remy", "role": "reader"})
    assert r.status == 200, r
    assert root.call("DELETE", "/api/v1/users/remy").status == 204
    r = refused_everywhere(node, "remy/mine.txt", "account_inactive")
    assert "no such account" in r.json()["error"]["message"]
    r = node.request("node1", "GET", "alice/for-remy/x.txt")
    assert (r.status, error_code(r)) == (403, "account_inactive")
    r = remy.get("/api/v1/me")
    assert (r.status, error_code(r)) == (403, "no_such_user")
    r = root.call("POST", "/api/v1/login", {"username": "remy", "password": "correct horse battery"})
    assert (r.status, error_code(r)) == (401, "bad_credentials")
    # Its grants went with it, so an account made later under that name starts with none.
    assert alice_admin.get(acl("alice/for-remy/")).json()["grants"] == []


# -- a deletion reported before the creation it undoes -----------------------------------------


def test_delete_reported_before_the_create_does_not_resurrect_the_file(cluster, root):
    gus = new_user(root, "gus")
    ledger = Ledger(cluster, "gus", gus.node_api())
    ledger.put("node1", "keep.txt", b"kept")
    eventually(lambda: catalogue_diff(root, ledger, gus), what="the catalogue to show keep.txt")
    cluster.kill(ADMIN)
    ledger.put("node1", "ghost.txt", b"boo")
    ledger.delete("node3", "ghost.txt")  # node3 queues the tombstone, node1 the creation
    cluster.kill("node1")  # so node1's creation report arrives only after node3's tombstone
    restart = datetime.now(timezone.utc)
    start_admin(cluster)
    root = AdminApi(cluster)

    def sampled_since(node, t):
        samples = root.get(f"/api/v1/servers/{node}/storage?since={quote(t.isoformat())}").json()
        return samples["samples"]
    # node3's queue is FIFO: a sample taken after the restart means the tombstone went before.
    wait_for(lambda: sampled_since("node3", restart), timeout=10, what="node3's queue to drain")
    cluster.restart("node1")
    try:
        back = datetime.now(timezone.utc)
        wait_for(lambda: sampled_since("node1", back), timeout=10, what="node1's queue to drain")
        eventually(lambda: catalogue_diff(root, ledger, gus), timeout=5,
                   what="the catalogue to keep the deleted file deleted")
    finally:
        all_running(cluster)
