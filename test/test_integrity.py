"""Probe tests: bit rot in a replica copy (one byte flipped, size and mtime kept) is never
delivered as a whole file; it is quarantined, logged, published stale, and read elsewhere."""
import http.client
import os
import sqlite3

from .helpers import AdminApi, Api, wait_for
from .test_faults import (DETECT, VERIFY, copy_on_disk, holders_of, put_ok, record_on, settled,
                          wait_seen)
from .test_scrubber import rot

from securifile.nodes.challenge import stat_key

PATH = "alice/rot/report.bin"


def quarantined(cluster, node):
    folder = cluster.cfg.node_data_dir(node) / "quarantine" / "alice" / "rot"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def named_stale(api, observers, node):
    return all(node in (record_on(api, o, PATH) or {}).get("stale", []) for o in observers)


def integrity_events(admin):
    r = admin.get("/api/v1/events?after=0&limit=1000")
    assert r.status == 200, r
    return [e for e in r.json()["events"] if e["kind"] == "integrity"]


def read(api, node):
    """'whole' for a complete 200 (whose body must be the original), 'broken' for a transfer
    cut short, else the status."""
    try:
        _served_by, r = api.follow(node, "GET", PATH)
    except (http.client.HTTPException, OSError):
        return "broken"
    if r.status != 200:
        return r.status
    return "whole" if r.body == DATA else "WRONG BYTES"


DATA = os.urandom(3 << 20)  # several read chunks


def fresh_again(cluster, node):
    """[node] once the repair loop (every 5 s) has sent it a fresh copy of the quarantined
    one, after which it may serve the file itself; else []."""
    copy = copy_on_disk(cluster, node, PATH)
    return [node] if copy.exists() and copy.read_bytes() == DATA else []


def test_a_rotten_replica_read_after_its_origin_died_is_never_served_whole(make_cluster):
    # No scrub pass before the reads: the read itself must catch the rot.
    cluster = settled(make_cluster, servers=3, replicas=2, scrub_interval=3600)
    api, admin = Api(cluster), AdminApi(cluster)
    origin, first, second = holders_of(put_ok(api, "node1", PATH, DATA))
    rot(copy_on_disk(cluster, first, PATH), len(DATA) // 2)
    cluster.kill(origin)
    wait_seen(cluster, [first, second], origin, "down", DETECT)

    outcomes = [read(api, node) for node in (first, second) for _ in range(12)]
    assert "WRONG BYTES" not in outcomes, outcomes
    assert outcomes[0] == "broken", outcomes  # first asked: it serves, and breaks off
    assert set(outcomes) <= {"whole", "broken"}, outcomes

    # The copy is moved aside, the others know it is stale, and reads come from the sound
    # holder, until the repair loop (every 5 s, so it may come at any step here) has sent
    # the first a fresh copy and a record that no longer names it stale.
    def repaired():
        return fresh_again(cluster, first) and not named_stale(api, [first, second], first)

    assert len(quarantined(cluster, first)) == 1
    assert not copy_on_disk(cluster, first, PATH).exists() or repaired()
    wait_for(lambda: named_stale(api, [first, second], first) or repaired(), VERIFY,
             what=f"{first} named stale for the file")
    for node in (first, second):
        served_by, r = api.follow(node, "GET", PATH)
        assert r.status == 200 and r.body == DATA, (node, served_by, r)
        assert served_by == second or (served_by == first and repaired()), (node, served_by)
    (event,) = wait_for(lambda: integrity_events(admin), VERIFY, what="the integrity event")
    assert event["server"] == first and event["path"] == PATH and "quarantined" in event["message"]
    wait_for(repaired, VERIFY, what=f"a fresh copy on {first}")
    served_by, r = api.follow(first, "GET", PATH)
    assert (served_by, r.status) == (first, 200) and r.body == DATA


def test_the_scrubber_finds_rot_that_nobody_reads(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1, scrub_interval=0.2)
    api, admin = Api(cluster), AdminApi(cluster)
    origin, replica = holders_of(put_ok(api, "node1", PATH, DATA))
    rot(copy_on_disk(cluster, replica, PATH), 7)
    wait_for(lambda: quarantined(cluster, replica), VERIFY, what="the scrubber's quarantine")
    wait_for(lambda: named_stale(api, cluster.names, replica), VERIFY,
             what=f"{replica} named stale everywhere")
    (event,) = wait_for(lambda: integrity_events(admin), VERIFY, what="the integrity event")
    assert event["server"] == replica and "scrub" in event["message"]
    for node in cluster.names:
        served_by, r = api.follow(node, "GET", PATH)
        assert r.status == 200 and r.body == DATA, (node, served_by, r)
        assert served_by in (origin, *fresh_again(cluster, replica)), (node, served_by)


def test_with_verified_reads_off_a_rotten_copy_is_served_whole(make_cluster):
    """What ``verify_reads = false`` (a benchmark's setting) gives up: the copy goes out as
    it is, wrong bytes and all, under the right ETag."""
    cluster = settled(make_cluster, servers=3, replicas=1, verify_reads=False,
                      scrub_files_per_second=0)
    api = Api(cluster)
    origin, replica = holders_of(put_ok(api, "node1", PATH, DATA))
    rot(copy_on_disk(cluster, replica, PATH), 99)
    cluster.kill(origin)
    wait_seen(cluster, [replica], origin, "down", DETECT)
    served_by, r = api.follow(replica, "GET", PATH)
    assert (served_by, r.status, len(r.body)) == (replica, 200, len(DATA))
    assert r.body != DATA and not quarantined(cluster, replica)


def read_sums(cluster, node):
    """(packed checksums, the stat key they are for) of ``node``'s copy, from its map."""
    db = sqlite3.connect(cluster.cfg.node_data_dir(node) / "locations.sqlite3", timeout=10)
    try:
        return db.execute("SELECT chunk_sums, sums_key FROM copies WHERE owner = 'alice' AND "
                          "path = ?", (PATH.split("/", 1)[1],)).fetchone()
    finally:
        db.close()


def test_rot_that_leaves_the_file_times_alone_breaks_a_read_off_at_the_checksums(make_cluster):
    """Each holder takes per-MiB checksums as it writes its copy (the origin from the
    client's body, the replicas from the copy). Rot on the medium changes no ctime: the
    checksums still count for the file (the test carries their stat key over, which
    flipping a byte through the file system cannot avoid), and the read breaks off at the
    bad MiB; the digest confirms it, and the copy is quarantined and read elsewhere."""
    cluster = settled(make_cluster, servers=3, replicas=2, scrub_interval=3600)
    api = Api(cluster)
    origin, first, second = holders_of(put_ok(api, "node1", PATH, DATA))
    for node in (origin, first, second):
        sums, key = read_sums(cluster, node)
        assert len(sums) == 4 * 3 and key == stat_key(copy_on_disk(cluster, node, PATH)), node
    rot(copy_on_disk(cluster, first, PATH), (1 << 20) + 5)
    db = sqlite3.connect(cluster.cfg.node_data_dir(first) / "locations.sqlite3", timeout=10)
    with db:
        db.execute("UPDATE copies SET sums_key = ?", (stat_key(copy_on_disk(cluster, first, PATH)),))
    db.close()
    cluster.kill(origin)
    wait_seen(cluster, [first, second], origin, "down", DETECT)
    assert read(api, first) == "broken"
    assert len(wait_for(lambda: quarantined(cluster, first), VERIFY, what="the quarantine")) == 1
    served_by, r = api.follow(first, "GET", PATH)
    assert r.status == 200 and r.body == DATA, (served_by, r)
    assert served_by in (second, *fresh_again(cluster, first)), served_by


def test_bytes_a_cut_short_removal_left_are_swept_after_a_scrub_pass(make_cluster):
    """A node forgets a copy before it removes the file; killed between the two, it keeps
    bytes no copy record names. The scrubber's sweep after a complete pass removes them
    (here at once: ``orphan_grace = 0``), and nothing a record names."""
    cluster = settled(make_cluster, servers=3, replicas=1, scrub_interval=0.2, orphan_grace=0)
    api = Api(cluster)
    kept = "alice/rot/kept.bin"
    origin, replica = holders_of(put_ok(api, "node1", PATH, DATA))
    put_ok(api, "node1", kept, b"kept")
    assert api.follow("node1", "DELETE", PATH)[1].status == 204
    for node in (origin, replica):
        wait_for(lambda: not copy_on_disk(cluster, node, PATH).exists(), VERIFY,
                 what=f"{node} dropping its copy")
    # What a kill between forgetting the copy and removing the file would have left:
    left = copy_on_disk(cluster, replica, PATH)
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(DATA)
    wait_for(lambda: not left.exists(), VERIFY, what="the sweep of the unnamed file")
    for node in cluster.names:
        served_by, r = api.follow(node, "GET", kept)
        assert r.status == 200 and r.body == b"kept"
    assert api.follow("node1", "GET", PATH)[1].status == 404
