"""Probe tests of the storage cluster core: real node processes over TLS on loopback."""
import hashlib
import os
import subprocess


from .helpers import Api, disk_copy, sha256_file, wait_for


def holders_of(body):
    return [body["origin"]] + [r["server"] for r in sorted(body["replicas"], key=lambda r: r["priority"])]


def test_upload_download_integrity_matches_sha256sum(make_cluster, tmp_path):
    cluster = make_cluster(servers=3, replicas=2)
    api = Api(cluster)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    r = api.put("node2", "alice/data/big.bin", src.read_bytes())
    assert r.status == 201, r
    body = r.json()
    expected = subprocess.run(["sha256sum", str(src)], capture_output=True, text=True).stdout.split()[0]
    assert body["digest"] == expected
    assert body["origin"] == "node2" and body["size"] == src.stat().st_size
    # r=2 of 3: the two other nodes, priorities 1 and 2, each with a byte-identical copy.
    assert sorted(r["priority"] for r in body["replicas"]) == [1, 2]
    assert len(set(holders_of(body))) == 3
    for node in holders_of(body):
        assert sha256_file(disk_copy(cluster, node, "alice", "data/big.bin")) == expected
    for node in cluster.names:
        served_by, got = api.follow(node, "GET", "alice/data/big.bin")
        assert got.status == 200 and served_by == "node2"
        assert hashlib.sha256(got.body).hexdigest() == expected
        assert got.headers["ETag"] == f'"{expected}"'
        assert got.headers["Repr-Digest"].startswith("sha-256=:")


def test_non_origin_redirects_to_origin_with_307(api):
    assert api.put("node1", "alice/a.txt", b"hello").status == 201
    r = api.get("node3", "alice/a.txt")
    assert r.status == 307
    assert r.headers["Location"] == api.cluster.url("node1") + "/files/alice/a.txt?holder=node1"
    assert r.json()["redirect"] == r.headers["Location"]


def test_every_node_knows_the_location_and_it_survives_restart(make_cluster):
    cluster = make_cluster(servers=3, replicas=1)
    api = Api(cluster)
    body = api.put("node1", "alice/keep.txt", b"x" * 100).json()
    cluster.kill("node3")
    cluster.restart("node3")
    r = api.get("node3", "alice/keep.txt")
    if "node3" in holders_of(body):
        assert r.status in (200, 307)
    else:
        assert r.status == 307 and r.headers["Location"].startswith(cluster.url("node1"))


def test_redirect_chain_origin_then_priority_one_then_priority_two(make_cluster):
    cluster = make_cluster(servers=5, replicas=2)
    api = Api(cluster)
    body = api.put("node1", "alice/ha.bin", b"abc" * 1000).json()
    p1, p2 = holders_of(body)[1:]
    observer = next(n for n in cluster.names if n not in holders_of(body))

    cluster.kill("node1")
    wait_for(lambda: api.sees(observer, "node1", "down"), what="origin seen down")
    served_by, r = api.follow(observer, "GET", "alice/ha.bin")
    assert (served_by, r.status, r.body) == (p1, 200, b"abc" * 1000)

    cluster.kill(p1)
    wait_for(lambda: api.sees(observer, p1, "down"), what="priority 1 seen down")
    served_by, r = api.follow(observer, "GET", "alice/ha.bin")
    assert (served_by, r.status, r.body) == (p2, 200, b"abc" * 1000)

    cluster.kill(p2)  # two of five left: not a majority, so they stop serving
    wait_for(lambda: api.get(observer, "alice/ha.bin").status == 503, what="no quorum")
    assert api.get(observer, "alice/ha.bin").json()["error"]["code"] == "no_quorum"


def test_when_every_holder_is_down_the_majority_answers_503_naming_the_file(make_cluster):
    cluster = make_cluster(servers=5, replicas=1)
    api = Api(cluster)
    holders = holders_of(api.put("node1", "alice/ha.bin", b"abc").json())
    observer = next(n for n in cluster.names if n not in holders)
    for h in holders:
        cluster.kill(h)
        wait_for(lambda: api.sees(observer, h, "down"), what=f"{h} seen down")
    r = api.get(observer, "alice/ha.bin")
    assert r.status == 503
    err = r.json()["error"]
    assert err["code"] == "no_holder_running" and err["file"] == "alice/ha.bin"


def test_range_requests(api):
    data = bytes(range(256)) * 64
    api.put("node1", "alice/r.bin", data)
    r = api.get("node1", "alice/r.bin", headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.body == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert api.get("node1", "alice/r.bin", headers={"Range": "bytes=-5"}).body == data[-5:]
    assert api.get("node1", "alice/r.bin", headers={"Range": "bytes=16000-"}).body == data[16000:]
    r = api.get("node1", "alice/r.bin", headers={"Range": f"bytes={len(data)}-"})
    assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    head = api.request("node1", "HEAD", "alice/r.bin")
    assert head.status == 200 and head.body == b"" and head.headers["Content-Length"] == str(len(data))


def test_modify_raises_version_and_updates_every_copy(make_cluster):
    cluster = make_cluster(servers=3, replicas=2)
    api = Api(cluster)
    assert api.put("node1", "alice/m.txt", b"one").status == 201
    r = api.put("node1", "alice/m.txt", b"two, longer")
    assert r.status == 200 and r.json()["version"] == 2
    for node in cluster.names:
        assert disk_copy(cluster, node, "alice", "m.txt").read_bytes() == b"two, longer"
    # A PUT at a non-origin node is sent to the origin too.
    r = api.put("node2", "alice/m.txt", b"three")
    assert r.status == 307 and r.headers["Location"].startswith(cluster.url("node1"))


def test_delete_removes_every_copy_and_location(make_cluster):
    cluster = make_cluster(servers=3, replicas=2)
    api = Api(cluster)
    api.put("node1", "alice/d/x.txt", b"bye")
    r = api.request("node2", "DELETE", "alice/d/x.txt")
    assert r.status == 204
    for node in cluster.names:
        assert not disk_copy(cluster, node, "alice", "d/x.txt").exists()
        assert api.get(node, "alice/d/x.txt").status == 404
    # The name can be used again, above the tombstone's version.
    r = api.put("node3", "alice/d/x.txt", b"again")
    assert r.status == 201 and r.json()["version"] == 3


def test_listing_a_folder(api):
    for name in ("docs/a.txt", "docs/sub/b.txt", "other.txt"):
        api.put("node1", f"alice/{name}", b"1")
    files = api.get("node2", "alice/docs/").json()["files"]
    assert [f["path"] for f in files] == ["docs/a.txt", "docs/sub/b.txt"]
    assert len(api.get("node3", "alice/").json()["files"]) == 3


def test_file_and_folder_names_cannot_collide(api):
    api.put("node1", "alice/f", b"file")
    r = api.put("node1", "alice/f/inside", b"x")
    assert r.status == 409 and r.json()["error"]["code"] == "parent_is_a_file"
    api.put("node1", "alice/dir/x", b"x")
    r = api.put("node2", "alice/dir", b"x")
    assert r.status == 409 and r.json()["error"]["code"] == "is_a_folder"


def test_other_namespace_is_forbidden(api):
    r = api.put("node1", "bob/file.txt", b"x")
    assert r.status == 403 and r.json()["error"]["code"] == "forbidden"
    assert api.get("node1", "bob/").status == 403


def test_unauthenticated_requests_get_401(cluster):
    anon = Api(cluster, cert=False)
    r = anon.put("node1", "alice/x", b"x")
    assert r.status == 401 and r.json()["error"]["code"] == "unauthenticated"
    bad = Api(cluster, cert=False, token="not.a.token")
    assert bad.get("node1", "alice/x").status == 401


def test_wrong_content_digest_is_refused_and_nothing_stored(api):
    import base64
    api.put("node1", "alice/keep.bin", b"original")
    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    r = api.put("node1", "alice/keep.bin", b"replacement", headers={"Content-Digest": f"sha-256=:{wrong}:"})
    assert r.status == 400 and r.json()["error"]["code"] == "digest_mismatch"
    assert api.get("node1", "alice/keep.bin").body == b"original"
    right = base64.b64encode(hashlib.sha256(b"replacement").digest()).decode()
    r = api.put("node1", "alice/keep.bin", b"replacement", headers={"Content-Digest": f"sha-256=:{right}:"})
    assert r.status == 200


def test_no_space_gives_507_and_nothing_half_written(make_cluster):
    cluster = make_cluster(servers=2, replicas=0, capacity_bytes=100_000)
    api = Api(cluster)
    assert api.put("node1", "alice/small", b"s" * 50_000).status == 201
    r = api.put("node1", "alice/big", b"b" * 60_000)
    assert r.status == 507 and r.json()["error"]["code"] == "insufficient_storage"
    assert not disk_copy(cluster, "node1", "alice", "big").exists()
    assert list((cluster.cfg.node_data_dir("node1") / "tmp").iterdir()) == []


def _inodes(folder):
    """Inode numbers of the files in ``folder`` (a file renamed away meanwhile is skipped)."""
    found = set()
    for p in folder.iterdir():
        try:
            found.add(p.stat().st_ino)
        except FileNotFoundError:
            pass
    return found


def test_uploads_and_copies_take_their_temp_files_from_spares_made_ahead(make_cluster):
    """A node makes empty files ahead in DATA/spare (nodes/sparefiles.py): the stored file
    on the origin and on its replica is one of the spares that waited there."""
    cluster = make_cluster(servers=2, replicas=1)
    api = Api(cluster)
    assert api.put("node1", "alice/first.bin", b"one").status == 201  # starts both makers
    spare = {n: cluster.cfg.node_data_dir(n) / "spare" for n in cluster.names}
    wait_for(lambda: all(len(_inodes(d)) >= 8 for d in spare.values()), timeout=10)
    before = {n: _inodes(d) for n, d in spare.items()}
    assert api.put("node1", "alice/second.bin", b"two").status == 201
    for n in cluster.names:
        assert disk_copy(cluster, n, "alice", "second.bin").stat().st_ino in before[n], n
        assert all(p.stat().st_size == 0 for p in spare[n].iterdir()), n
        assert list((cluster.cfg.node_data_dir(n) / "tmp").iterdir()) == [], n
