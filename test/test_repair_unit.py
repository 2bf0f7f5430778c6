"""The repair loop's handling of crash leftovers, on a real disk store and location map with
a one-server StorageNode (no peers: its locks and records need nobody else)."""
import asyncio
import random

import pytest

from securifile.common.paths import parse_path
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.locationmap import Location, LocationMap, Replica
from securifile.nodes.peers import PeerTable
from securifile.nodes.repair import RepairLoop
from securifile.nodes.storage import StorageNode


@pytest.fixture
def node(tmp_path):
    store = DiskStore(tmp_path / "data")
    locations = LocationMap(tmp_path / "locations.sqlite3")
    n = StorageNode("node1", {"node1": "https://127.0.0.1:1"}, 1, "sha256", store, locations,
                    PeerTable("node1", ["node1"]), peer_client=None, rng=random.Random(1))
    yield n
    locations.close()


def store_copy(node, path, data, version):
    fp = parse_path(path)
    w = node.store.writer(fp, "sha256")
    w.write(data)
    digest = w.commit()
    node.record_copy(fp, version, digest, len(data))
    return fp, digest


def record(path, origin, replicas, version, digest="d" * 64, size=1):
    owner, rel = path.split("/", 1)
    return Location(owner, rel, origin, digest, "sha256", size, version,
                    [Replica(s, i) for i, s in enumerate(replicas, start=1)])


def test_a_copy_no_record_names_this_server_for_is_removed(node):
    fp, _ = store_copy(node, "alice/orphan.bin", b"left by a crash", 1)
    node.locations.apply(record("alice/orphan.bin", "node2", ["node3"], 1))
    kept, _ = store_copy(node, "alice/kept.bin", b"mine", 1)
    node.locations.apply(record("alice/kept.bin", "node1", ["node2"], 1))
    loop = RepairLoop(node, repair_after=300, interval=1, batch=10, grace=0)
    asyncio.run(loop.settle_leftovers())
    assert not node.store.exists(fp) and node.locations.copy_version(fp) is None
    assert node.store.exists(kept) and loop.removed == 1


def test_a_young_or_locked_copy_is_left_alone(node):
    fp, _ = store_copy(node, "alice/young.bin", b"record on its way", 1)
    locked, _ = store_copy(node, "alice/locked.bin", b"upload under way", 1)
    node.locks.acquire(locked, "alice", "node2", "token", 30)
    loop = RepairLoop(node, 300, 1, 10, grace=3600)
    asyncio.run(loop.settle_leftovers())
    assert node.store.exists(fp) and node.store.exists(locked) and loop.removed == 0
    loop.grace = 0  # old enough now: the unlocked one goes, the locked one stays
    asyncio.run(loop.settle_leftovers())
    assert not node.store.exists(fp) and node.store.exists(locked)


def test_a_copy_ahead_of_its_record_is_adopted_and_the_others_marked_stale(node):
    path = "alice/mod.bin"
    node.locations.apply(record(path, "node1", ["node2"], 1))
    fp, digest = store_copy(node, path, b"version two, never published", 2)
    loop = RepairLoop(node, 300, 1, 10, grace=0)
    asyncio.run(loop.settle_leftovers())
    loc = node.locations.get(fp)
    assert (loc.version, loc.digest, loc.size) == (2, digest, 28)
    assert loc.stale == ["node2"] and loc.stamp > 1 and loop.adopted == 1
    assert node.route_read(fp) == ("serve", loc)


def test_a_copy_lost_here_is_published_stale_for_repair(node):
    path = "alice/lost.bin"
    fp, digest = store_copy(node, path, b"quarantined later", 1)
    node.locations.apply(record(path, "node1", ["node2"], 1, digest=digest))
    node._drop_local(fp)  # quarantined while the record could not be changed
    asyncio.run(RepairLoop(node, 300, 1, 10, grace=0).settle_leftovers())
    loc = node.locations.get(fp)
    assert loc.stale == ["node1"] and loc.current_holders == ["node2"]
