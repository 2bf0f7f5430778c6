"""Unit tests of partial uploads on a real temp directory: offsets, hashes across pauses and
restarts, rewinds, commits, the expiry and the sweep."""
import hashlib
import os

import pytest

from securifile.common.errors import NotFound
from securifile.common.paths import FilePath
from securifile.nodes.diskfile import DiskStore, DigestMismatch
from securifile.nodes.partial_uploads import PartialUploadStore, TooManyPartialUploads

from .fakes import Clock


MiB = 1 << 20


@pytest.fixture
def disk(tmp_path):
    clock = Clock()
    return DiskStore(tmp_path), PartialUploadStore(tmp_path, 60, 2, clock), clock


def append(partials, store, upload, data, pause=True):
    w = partials.writer(upload, "sha256").bind(store)
    for i in range(0, len(data), 7000):  # small pieces: the 1 MiB buffer is really used
        w.write(data[i:i + 7000])
    return w.pause() if pause else w


def test_pieces_across_pauses_and_a_restart_commit_to_the_whole_file(disk, tmp_path):
    store, partials, clock = disk
    data = os.urandom(3 << 20)
    up = partials.create("alice", FilePath("alice", "a/b.bin"), 0, len(data))
    assert append(partials, store, up, data[:1_000_000]) == 1_000_000
    assert partials.offset(up) == 1_000_000
    # A restart: a new store knows nothing kept in memory and hashes the bytes again.
    partials = PartialUploadStore(tmp_path, 60, 2, clock)
    up = partials.get(up.id, "alice")
    assert append(partials, store, up, data[1_000_000:2_000_000]) == 2_000_000
    w = append(partials, store, up, data[2_000_000:], pause=False)
    digest = w.commit(hashlib.sha256(data).hexdigest())
    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "files" / "alice" / "a" / "b.bin").read_bytes() == data
    assert store.used_bytes() == len(data)


def test_a_wrong_whole_file_digest_discards_the_upload(disk):
    store, partials, _ = disk
    up = partials.create("alice", FilePath("alice", "c.bin"), 0)
    w = append(partials, store, up, b"abc", pause=False)
    with pytest.raises(DigestMismatch):
        w.commit(hashlib.sha256(b"abd").hexdigest())
    assert w.discarded and not store.exists(FilePath("alice", "c.bin"))
    with pytest.raises(NotFound):
        partials.get(up.id, "alice")


@pytest.mark.parametrize("bad", [b"bad bytes", b"b" * (2 * MiB + 3)],
                         ids=["small", "buffers-written-behind"])
def test_a_rewind_drops_one_requests_bytes_and_their_hash(disk, bad):
    store, partials, _ = disk
    up = partials.create("alice", FilePath("alice", "d.bin"), 0)
    append(partials, store, up, b"good")
    w = partials.writer(up, "sha256").bind(store)
    before = w.hasher.copy()
    for i in range(0, len(bad), 7000):
        w.write(bad[i:i + 7000])
    w.rewind(before)
    w.write(b" more")
    assert w.commit() == hashlib.sha256(b"good more").hexdigest()


def test_only_the_creator_sees_it_a_user_has_few_and_expired_ones_are_swept(disk):
    store, partials, clock = disk
    up = partials.create("alice", FilePath("alice", "e.bin"), 0)
    partials.create("alice", FilePath("alice", "f.bin"), 0)
    with pytest.raises(TooManyPartialUploads):
        partials.create("alice", FilePath("alice", "g.bin"), 0)
    partials.create("bob", FilePath("bob", "g.bin"), 0)
    with pytest.raises(NotFound):
        partials.get(up.id, "bob")
    with pytest.raises(NotFound):
        partials.get("../../etc/passwd", "alice")
    clock.now += 30
    partials.touch(up)
    clock.now += 45  # the others are 75 s old, this one 45 s
    (partials.dir / "stray.data").write_bytes(b"left by a crash")
    assert partials.sweep() == 2
    assert [u.id for u in partials.all()] == [up.id]
    assert sorted(p.name for p in partials.dir.iterdir()) == [f"{up.id}.data", f"{up.id}.json"]
