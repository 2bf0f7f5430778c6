"""Probe tests of quotas and the nodes' free-space reserve: real admin server and nodes.

One cluster for the module: two nodes, one replica (every file on both). node1's data
directory is a 16 MiB tmpfs and every node keeps 8 MiB free, so node1 has about 8 MiB for
uploads: the reserve is checked against a file system that really fills.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .clusters import start_cluster
from .helpers import AdminApi, Api, disk_copy, wait_for

KiB, MiB = 1024, 1 << 20
TMPFS = 16 * MiB
RESERVE = 8 * MiB


def chunked(data, size=4 * KiB):
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a node's data needs root")
    mounted = []

    def small_disk(cluster):
        folder = cluster.cfg.node_data_dir("node1")
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS},mode=0700", "tmpfs",
                        str(folder)], check=True)
        mounted.append(folder)

    c = None
    try:
        c = start_cluster(tmp_path_factory, "quotas", servers=2, replicas=1,
                          reserve_bytes=RESERVE, quota_reservation_seconds=6.0,
                          before_start=small_disk)
        yield c
    finally:
        if c is not None:
            c.stop()
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def admin(cluster):
    return AdminApi(cluster)


@pytest.fixture(scope="module")
def alice(cluster):
    return AdminApi(cluster, "alice")


def set_quota(admin, user, quota):
    r = admin.call("PATCH", f"/api/v1/users/{user}", {"quota_bytes": quota})
    assert r.status == 200, r
    return r.json()


@pytest.fixture
def quota(cluster, admin):
    """``quota(user, bytes)`` for one test: each quota it sets is lifted when the test ends,
    passed or failed, so that no test runs under a quota another one left behind.

    A node that saw ``user`` without a quota remembers that for ``authz_cache_seconds``
    (docs/DESIGN.md, "Quotas"): a new limit binds there only once that memory has lapsed.
    Its length is the cluster's setting, so waiting it out after the PATCH is certain, not
    hoped for (CI found the CLI's upload inside that window after an unlimited write).
    A lifted quota needs no wait: a node asks the admin server for every limited owner."""
    touched = []

    def set_for_test(user, quota_bytes):
        touched.append(user)
        answer = set_quota(admin, user, quota_bytes)
        if quota_bytes is not None:
            time.sleep(cluster.cfg.authz_cache_seconds)
        return answer

    yield set_for_test
    for user in dict.fromkeys(touched):
        set_quota(admin, user, None)


def usage(who):
    r = who.get("/api/v1/me")
    assert r.status == 200, r
    return r.json()


def settled(who, used):
    """/me once the reports are in: ``used`` bytes and nothing reserved any more."""
    return wait_for(lambda: (lambda me: me if (me["used_bytes"], me["reserved_bytes"]) == (
        used, 0) else None)(usage(who)), timeout=30, what=f"usage {used} and no reservation")


def no_temp_files(cluster):
    return all(not any((cluster.cfg.node_data_dir(n) / "tmp").iterdir()) for n in cluster.names)


def test_a_node_remembers_owners_with_a_quota_across_restarts(tmp_path):
    from securifile.nodes.quota import QuotaKeeper

    state = tmp_path / "quota-owners.json"
    keeper = QuotaKeeper("https://127.0.0.1:1", client=None, state_path=state)
    keeper.learned("alice", True)
    keeper.learned("bob", True)
    keeper.learned("bob", False)  # bob's quota was lifted
    assert QuotaKeeper("https://127.0.0.1:1", client=None, state_path=state).limited == {"alice"}
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    state.write_text("not json")
    assert QuotaKeeper("https://127.0.0.1:1", client=None, state_path=state).limited == set()


def test_quota_counts_each_file_once_and_refuses_what_does_not_fit(cluster, quota, alice):
    api = Api(cluster)
    answer = quota("alice", 100 * KiB)
    assert answer["quota_bytes"] == 100 * KiB
    r = api.put("node1", "alice/q/first.bin", b"a" * (60 * KiB))
    assert r.status == 201, r
    assert len(r.json()["replicas"]) == 1  # two copies, counted once
    me = settled(alice, 60 * KiB)
    assert me["quota_bytes"] == 100 * KiB

    # A declared length over the quota: refused before a byte is stored.
    r = api.put("node2", "alice/q/second.bin", b"b" * (50 * KiB))
    assert r.status == 507, r
    error = r.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert (error["used_bytes"], error["quota_bytes"]) == (60 * KiB, 100 * KiB)
    assert api.get("node1", "alice/q/second.bin").status == 404
    assert not disk_copy(cluster, "node2", "alice", "q/second.bin").exists()

    # A modification reserves only its growth: 60 KiB -> 95 KiB fits in 100 KiB.
    r = api.put("node1", "alice/q/first.bin", b"c" * (95 * KiB))
    assert r.status == 200, r
    settled(alice, 95 * KiB)
    wait_for(lambda: no_temp_files(cluster), what="no temp files")


def test_a_chunked_body_is_stopped_when_it_outgrows_the_quota(cluster, quota, alice):
    api = Api(cluster)
    base = settled(alice, usage(alice)["used_bytes"])["used_bytes"]
    quota("alice", base + 40 * KiB)
    r = api.request("node1", "PUT", "alice/q/stream.bin", body=chunked(b"s" * (64 * KiB)))
    assert r.status == 507, r
    assert r.json()["error"]["code"] == "quota_exceeded"
    assert api.get("node1", "alice/q/stream.bin").status == 404
    wait_for(lambda: no_temp_files(cluster), what="the temp file gone")
    # The refused upload's reservation was given back: the whole headroom is there again.
    wait_for(lambda: usage(alice)["reserved_bytes"] == 0, what="the reservation given back")
    # Far over (more than 1 MiB still to come): the answer goes out while the body still
    # arrives, and the rest is read and dropped, so the client that keeps sending gets it.
    r = api.request("node1", "PUT", "alice/q/stream.bin", body=chunked(b"s" * (3 * MiB), 64 * KiB))
    assert r.status == 507 and r.headers["Connection"] == "close", r
    assert r.json()["error"]["code"] == "quota_exceeded"
    wait_for(lambda: no_temp_files(cluster), what="the temp file gone")
    r = api.request("node2", "PUT", "alice/q/stream.bin", body=chunked(b"t" * (40 * KiB)))
    assert r.status == 201, r
    settled(alice, base + 40 * KiB)


def test_concurrent_uploads_cannot_overcommit(cluster, quota, alice):
    """Eight uploads of 30 KiB race for 100 KiB of headroom on both nodes: three fit."""
    api = Api(cluster)
    base = settled(alice, usage(alice)["used_bytes"])["used_bytes"]
    quota("alice", base + 100 * KiB)
    results = []
    barrier = threading.Barrier(8)

    def upload(i):
        barrier.wait(timeout=30)
        r = api.put(f"node{1 + i % 2}", f"alice/race/{i}.bin", b"r" * (30 * KiB))
        results.append(r.status)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [201] * 3 + [507] * 5, results
    settled(alice, base + 90 * KiB)


def test_usage_and_quota_through_the_users_list(cluster, admin, quota):
    quota("alice", 5 << 30)
    users = {u["username"]: u for u in admin.get("/api/v1/users").json()["users"]}
    assert users["alice"]["quota_bytes"] == 5 << 30
    assert users["admin"]["quota_bytes"] is None
    r = admin.call("PATCH", "/api/v1/users/alice", {"quota_bytes": -1})
    assert r.status == 400 and r.json()["error"]["code"] == "bad_quota"
    r = admin.call("PATCH", "/api/v1/users/nobody", {"quota_bytes": 1})
    assert r.status == 404
    r = AdminApi(cluster, "alice").call("PATCH", "/api/v1/users/alice", {"quota_bytes": None})
    assert r.status == 403


def test_reservations_are_for_nodes_only(cluster, admin):
    r = admin.call("PUT", "/api/v1/quota/reservations/" + "0" * 32,
                   {"owner": "alice", "path": "x", "bytes": 1})
    assert r.status == 403, r


def test_a_node_keeps_its_reserve_of_free_space(cluster, alice):
    api = Api(cluster)
    folder = cluster.cfg.node_data_dir("node1")
    room = shutil.disk_usage(folder).free - RESERVE
    assert 4 * MiB < room < 8 * MiB
    # Without Content-Length the node had no length to check up front: it stops the body
    # where it would reach into the reserve.
    r = api.request("node1", "PUT", "alice/big/chunked.bin",
                    body=chunked(b"x" * (room + 256 * KiB), 64 * KiB))
    assert r.status == 507, r
    assert r.json()["error"]["code"] == "insufficient_storage"
    wait_for(lambda: no_temp_files(cluster), what="the temp file gone")
    assert shutil.disk_usage(folder).free > RESERVE
    # A declared length into the reserve is refused before the body (as curl asks first).
    conn = api.connection("node1")
    try:
        conn.putrequest("PUT", "/files/alice/big/declared.bin")
        conn.putheader("Content-Length", str(room + 256 * KiB))
        conn.putheader("Expect", "100-continue")
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == 507 and json.loads(r.read())["error"]["code"] == "insufficient_storage"
    finally:
        conn.close()
    # What stays out of the reserve is stored.
    r = api.request("node1", "PUT", "alice/big/fits.bin", body=chunked(b"z" * (room - 2 * MiB),
                                                                         64 * KiB))
    assert r.status == 201, r
    assert shutil.disk_usage(folder).free > RESERVE
    assert json.loads(api.request("node1", "DELETE", "alice/big/fits.bin").body or b"{}") == {}


def create_upload(api, path, length=None, body=b""):
    h = {"Upload-Complete": "?0"}
    if length is not None:
        h["Upload-Length"] = str(length)
    return api.request("node1", "POST", "/uploads/" + path, body=body, headers=h, raw_path=True)


def append_upload(api, where, offset, body, complete):
    h = {"Upload-Offset": str(offset), "Upload-Complete": "?1" if complete else "?0",
         "Content-Type": "application/partial-upload"}
    return api.request("node1", "PATCH", where, body=body, headers=h, raw_path=True)


def upload_offset(api, where):
    r = api.request("node1", "HEAD", where, raw_path=True)
    assert r.status == 204, r
    return int(r.headers["Upload-Offset"])


def partial_files(cluster):
    return list((cluster.cfg.node_data_dir("node1") / "partial").glob("*.data"))


def test_resumable_uploads_reserve_their_length_or_their_bytes(cluster, admin, quota):
    """A user of its own: no report of another test's files still on its way."""
    admin.add_user("rita")
    rita = admin.as_user("rita")
    api = rita.node_api()
    base = 0
    quota("rita", base + 40 * KiB)
    before = len(partial_files(cluster))

    # A declared length over the quota: refused at creation, nothing kept.
    r = create_upload(api, "rita/res/over.bin", length=50 * KiB)
    assert r.status == 507, r
    error = r.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert (error["used_bytes"], error["quota_bytes"]) == (base, base + 40 * KiB)
    assert len(partial_files(cluster)) == before

    # No declared length: the appends reserve as their bytes arrive; the one that outgrows
    # the quota is refused and what fitted is kept.
    r = create_upload(api, "rita/res/grow.bin", body=b"g" * (20 * KiB))
    assert r.status == 201, r
    where = urlsplit(r.headers["Location"]).path
    r = append_upload(api, where, 20 * KiB, chunked(b"g" * (30 * KiB)), complete=False)
    assert r.status == 507, r
    assert r.json()["error"]["code"] == "quota_exceeded"
    kept = upload_offset(api, where)
    assert 20 * KiB <= kept <= 40 * KiB
    # Between requests the partial upload holds what it has, no step ahead: the node
    # shrank the reservation before it answered.
    assert usage(rita)["reserved_bytes"] == kept

    # Cancelled: its reservation goes back at once (it would lapse only after 6 s).
    cancelled = time.monotonic()
    r = api.request("node1", "DELETE", where, raw_path=True)
    assert r.status == 204, r
    wait_for(lambda: usage(rita)["reserved_bytes"] == 0, timeout=30, interval=0.05,
             what="the cancelled upload's reservation given back")
    assert time.monotonic() - cancelled < 5.0, "given back by expiry, not by the cancel"

    # Within the quota: completes and counts once.
    r = create_upload(api, "rita/res/fits.bin", length=30 * KiB, body=b"f" * (10 * KiB))
    assert r.status == 201, r
    where = urlsplit(r.headers["Location"]).path
    r = append_upload(api, where, 10 * KiB, b"f" * (20 * KiB), complete=True)
    assert r.status == 201, r
    settled(rita, base + 30 * KiB)
    # The rest of the quota is 10 KiB: a declared 20 KiB upload does not fit any more.
    r = create_upload(api, "rita/res/late.bin", length=20 * KiB)
    assert r.status == 507, r
    quota("rita", None)
    # node1 hears rita has no quota any more (the last test counts the owners it knows).
    assert api.put("node1", "rita/res/after.bin", b"a").status == 201


def test_put_of_a_big_file_over_quota_fails_at_once_with_a_clear_message(cluster, quota,
                                                                          tmp_path):
    cli = Path(sys.executable).parent / "securifile"
    quota("alice", MiB)  # below or just above what alice has: 5 MiB cannot fit
    local = tmp_path / "big.bin"
    local.write_bytes(b"b" * (5 * MiB))  # resumable (4 MiB or more)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURIFILE_", "XDG_"))}
    r = subprocess.run([str(cli), "--cluster", str(cluster.data_dir / "cluster.json"),
                        "--no-progress", "put", str(local), "alice/res/big.bin"],
                       env=dict(env, HOME=str(tmp_path)), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert "quota" in r.stderr and "resum" not in r.stderr, r.stderr


def test_with_the_admin_server_down_only_owners_seen_with_a_quota_are_refused(cluster, admin,
                                                                             quota):
    """Last in the module: it kills the admin server (and starts it again)."""
    api = Api(cluster)
    admin.add_user("otto")
    otto = admin.as_user("otto").node_api()
    quota("alice", 10 << 20)
    state = cluster.cfg.node_data_dir("node1") / "quota-owners.json"

    def seen_limited():
        # node1 asks the admin server for a reservation (once its few seconds' memory of
        # "no quota" has passed) and remembers, on disk, that alice has a quota. Whom else
        # it remembers (an owner of an earlier test) does not matter here.
        assert api.put("node1", "alice/offline/seen.bin", b"q" * KiB).status in (200, 201)
        return state.exists() and "alice" in json.loads(state.read_text())["limited"]

    wait_for(seen_limited, timeout=30, interval=0.2, what="node1 to know alice's quota")
    assert "otto" not in json.loads(state.read_text())["limited"]
    cluster.kill("admin")
    try:
        r = api.put("node1", "alice/offline/refused.bin", b"q" * KiB)
        assert r.status == 503 and r.json()["error"]["code"] == "quota_unchecked", r
        assert r.headers["Retry-After"]
        # An owner without a quota keeps writing their own files, as access decisions allow.
        r = otto.put("node2", "otto/offline.bin", b"o" * KiB)
        assert r.status == 201, r
    finally:
        cluster.restart("admin")
    wait_for(lambda: api.put("node1", "alice/offline/back.bin", b"q" * KiB).status == 201,
             timeout=30, what="alice's uploads with the admin server back")
