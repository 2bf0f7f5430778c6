"""The disk layout on real temp directories, with 7-byte chunks so the streaming loops run."""
import asyncio
import errno
import fcntl
import hashlib
import os
import shutil
import threading
import time
import types

import pytest

from securifile.common.durable import FolderSyncer, fsync_dir
from securifile.common.errors import ApiError, Conflict, InsufficientStorage, NotFound
from securifile.common.paths import FilePath, parse_path
from securifile.nodes.diskfile import DigestMismatch, DiskStore

CHUNK = 7
MiB = 1 << 20
DATA = bytes(range(256)) * 3 + b"tail"  # 772 bytes: not a multiple of the chunk size


@pytest.fixture
def store(tmp_path):
    return DiskStore(tmp_path / "node")


def put(store, path, data, algorithm="sha256", chunk=CHUNK, **commit):
    """Stream ``data`` into the store in small chunks and commit it."""
    w = store.writer(parse_path(path), algorithm)
    for i in range(0, len(data), chunk):
        w.write(data[i:i + chunk])
    return w.commit(**commit)


def on_disk(store, path):
    return store.files_dir.joinpath(*path.split("/"))


def temp_files(store):
    return sorted(p.name for p in store.tmp_dir.iterdir())


def read_all(store, path, **kw):
    return b"".join(store.open_chunks(parse_path(path), chunk_size=CHUNK, **kw))


@pytest.mark.parametrize("algorithm, hashname", [
    ("sha1", "sha1"), ("sha256", "sha256"), ("sha512", "sha512"), ("sha3-256", "sha3_256")])
def test_commit_puts_the_bytes_at_their_name_with_the_digest_of_the_bytes(store, algorithm, hashname):
    digest = put(store, "alice/docs/report.bin", DATA, algorithm)
    assert digest == hashlib.new(hashname, DATA).hexdigest()
    assert on_disk(store, "alice/docs/report.bin").read_bytes() == DATA
    assert store.exists(parse_path("alice/docs/report.bin"))
    assert store.size(parse_path("alice/docs/report.bin")) == len(DATA)
    assert temp_files(store) == []


def test_bytes_appear_at_their_name_only_on_commit(store):
    put(store, "alice/f", b"old bytes")
    w = store.writer(parse_path("alice/f"), "sha256")
    w.write(b"new ")
    w.write(b"bytes, longer")
    # In flight: the old bytes stay readable, the new ones wait in a temp file.
    assert read_all(store, "alice/f") == b"old bytes"
    assert len(temp_files(store)) == 1
    assert w.size == len(b"new bytes, longer")
    w.commit(expected_digest=hashlib.sha256(b"new bytes, longer").hexdigest(),
             expected_size=len(b"new bytes, longer"))
    assert read_all(store, "alice/f") == b"new bytes, longer"
    assert temp_files(store) == []


def test_empty_file(store):
    assert put(store, "alice/empty", b"") == hashlib.sha256(b"").hexdigest()
    assert on_disk(store, "alice/empty").read_bytes() == b""
    assert list(store.open_chunks(parse_path("alice/empty"), chunk_size=CHUNK)) == []


def test_abort_leaves_nothing(store):
    used = store.used_bytes()
    w = store.writer(parse_path("alice/new/file"), "sha256")
    w.write(DATA)
    w.abort()
    w.abort()  # twice is harmless
    assert temp_files(store) == []
    assert not on_disk(store, "alice/new/file").exists()
    assert not on_disk(store, "alice").exists()
    assert store.used_bytes() == used == 0


def test_digest_mismatch_raises_and_keeps_the_old_file(store):
    put(store, "alice/f", b"original")
    used = store.used_bytes()
    w = store.writer(parse_path("alice/f"), "sha256")
    w.write(b"replacement")
    with pytest.raises(DigestMismatch) as e:
        w.commit(expected_digest=hashlib.sha256(b"something else").hexdigest())
    assert e.value.status == 400 and e.value.code == "digest_mismatch"
    assert on_disk(store, "alice/f").read_bytes() == b"original"
    assert temp_files(store) == []
    assert store.used_bytes() == used == len(b"original")


def test_a_body_that_breaks_off_is_not_committed(store):
    put(store, "alice/f", b"original")
    w = store.writer(parse_path("alice/f"), "sha256")
    w.write(b"only part")
    with pytest.raises(ApiError) as e:
        w.commit(expected_size=1000)
    assert e.value.code == "incomplete_body"
    assert on_disk(store, "alice/f").read_bytes() == b"original"
    assert temp_files(store) == []


@pytest.mark.parametrize("child", ["alice/a/b", "alice/a/b/c/d"])
def test_a_parent_that_is_a_file_is_a_conflict(store, child):
    put(store, "alice/a", b"a file")
    with pytest.raises(Conflict) as e:
        put(store, child, b"x")
    assert e.value.code == "parent_is_a_file" and e.value.status == 409
    assert on_disk(store, "alice/a").read_bytes() == b"a file"
    assert temp_files(store) == []


def test_a_name_that_is_a_folder_is_a_conflict(store):
    put(store, "alice/d/inner", b"inside")
    used = store.used_bytes()
    with pytest.raises(Conflict) as e:
        put(store, "alice/d", b"would hide the folder")
    assert e.value.code == "is_a_folder"
    assert on_disk(store, "alice/d/inner").read_bytes() == b"inside"
    assert temp_files(store) == []
    assert store.used_bytes() == used


def test_open_chunks_streams_in_chunks(store):
    put(store, "alice/f", DATA)
    chunks = list(store.open_chunks(parse_path("alice/f"), chunk_size=CHUNK))
    assert b"".join(chunks) == DATA
    assert [len(c) for c in chunks[:-1]] == [CHUNK] * (len(chunks) - 1)
    assert len(chunks) == -(-len(DATA) // CHUNK)


@pytest.mark.parametrize("start, end", [
    (0, 1), (0, 7), (0, 8), (3, 20), (7, 14), (6, 15), (700, 772), (771, 772), (0, 772),
    (5, 5), (100, None), (0, None), (760, 5000)])
def test_open_chunks_ranges(store, start, end):
    put(store, "alice/f", DATA)
    chunks = list(store.open_chunks(parse_path("alice/f"), start, end, chunk_size=CHUNK))
    assert b"".join(chunks) == DATA[start:end]
    assert all(0 < len(c) <= CHUNK for c in chunks)


@pytest.mark.parametrize("path", ["alice/missing", "nobody/x", "alice/f/below-a-file"])
def test_reading_a_missing_file_is_not_found(store, path):
    put(store, "alice/f", b"x")
    with pytest.raises(NotFound):
        store.open_chunks(parse_path(path))
    with pytest.raises(NotFound):
        store.size(parse_path(path))
    assert not store.exists(parse_path(path))
    assert store.delete(parse_path(path)) is False
    assert on_disk(store, "alice/f").read_bytes() == b"x"


def test_delete_removes_emptied_folders_up_to_the_namespace_root(store):
    put(store, "alice/a/b/c/deep.txt", b"deep")
    put(store, "alice/a/keep.txt", b"keep")
    assert store.delete(parse_path("alice/a/b/c/deep.txt")) is True
    assert not on_disk(store, "alice/a/b").exists()
    assert on_disk(store, "alice/a/keep.txt").read_bytes() == b"keep"
    assert store.delete(parse_path("alice/a/keep.txt")) is True
    assert not on_disk(store, "alice/a").exists()
    assert on_disk(store, "alice").is_dir()  # the namespace root stays
    assert store.files_dir.is_dir()
    assert store.delete(parse_path("alice/a/keep.txt")) is False


def test_delete_leaves_sibling_folders_alone(store):
    put(store, "alice/x/one", b"1")
    put(store, "alice/x/sub/two", b"2")
    store.delete(parse_path("alice/x/one"))
    assert on_disk(store, "alice/x/sub/two").read_bytes() == b"2"


def test_used_bytes_follows_commits_replacements_and_deletes(tmp_path):
    root = tmp_path / "node"
    first = DiskStore(root)
    put(first, "alice/before", b"x" * 11)
    store = DiskStore(root)
    assert store.used_bytes() == 11  # counted from disk

    def fresh():
        return DiskStore(root).used_bytes()

    put(store, "alice/a", b"a" * 100)
    assert store.used_bytes() == fresh() == 111
    put(store, "bob/b", b"b" * 50)
    assert store.used_bytes() == fresh() == 161
    put(store, "alice/a", b"a" * 30)  # replaced by a smaller file
    assert store.used_bytes() == fresh() == 91
    put(store, "alice/a", b"a" * 300)  # and by a bigger one
    assert store.used_bytes() == fresh() == 361
    w = store.writer(parse_path("alice/c"), "sha256")
    w.write(b"z" * 1000)
    assert store.used_bytes() == 361  # bytes in flight are not held yet
    w.abort()
    with pytest.raises(DigestMismatch):
        put(store, "alice/a", b"q" * 5, expected_digest="0" * 64)
    assert store.used_bytes() == fresh() == 361
    store.delete(parse_path("alice/a"))
    assert store.used_bytes() == fresh() == 61
    store.delete(parse_path("alice/a"))
    assert store.used_bytes() == fresh() == 61


def test_capacity_limits_the_room_for_uploads(tmp_path):
    store = DiskStore(tmp_path / "node", capacity_bytes=100)
    put(store, "alice/f", b"x" * 60)
    assert store.usage() == (60, 40)
    store.check_room(40)
    with pytest.raises(InsufficientStorage) as e:
        store.check_room(41)
    assert e.value.status == 507
    store.delete(parse_path("alice/f"))
    store.check_room(100)
    with pytest.raises(InsufficientStorage):
        store.check_room(101)


def test_without_a_capacity_the_file_system_free_space_counts(store):
    used, available = store.usage()
    assert used == 0 and available > 0
    with pytest.raises(InsufficientStorage):
        store.check_room(available + (1 << 40))


def test_sweep_temp_removes_uploads_a_crash_left_behind(tmp_path):
    root = tmp_path / "node"
    crashed = DiskStore(root)
    put(crashed, "alice/kept", b"committed")
    w = crashed.writer(parse_path("alice/half"), "sha256")
    w.write(b"half an upload")
    (crashed.tmp_dir / "up-stray").write_bytes(b"older leftovers")
    assert len(temp_files(crashed)) == 2
    restarted = DiskStore(root)
    restarted.sweep_temp()
    assert temp_files(restarted) == []
    assert on_disk(restarted, "alice/kept").read_bytes() == b"committed"
    assert not on_disk(restarted, "alice/half").exists()
    w.abort()


def test_path_for_stays_inside_the_namespace(store):
    assert store.path_for(parse_path("alice/a/b")) == store.files_dir / "alice" / "a" / "b"
    assert store.path_for(parse_path("alice/", allow_folder=True)) == store.files_dir / "alice"


@pytest.mark.parametrize("owner, rel", [
    ("alice", "../../outside"),
    ("alice", "../../../etc/passwd"),
    ("alice", "a/../../../outside"),
    ("alice", "../bob/secret"),   # inside files_dir, but someone else's namespace
    ("alice", ".."),
    ("..", "outside"),
    ("..", ""),
    ("alice/../bob", "secret"),
    (".", "x"),
    ("", "x"),
    ("alice", "a/./b"),  # stays inside, but no validated name has such a part
    ("alice", "a//b"),
    ("alice", "/etc/passwd"),
    ("alice", "a\0b"),
])
def test_path_for_refuses_names_that_escape(store, owner, rel):
    fp = FilePath(owner, rel)  # built directly: parse_path would never let these through
    with pytest.raises(ApiError) as e:
        store.path_for(fp)
    assert e.value.code == "invalid_path"
    w = store.writer(fp, "sha256")
    w.write(b"must not land anywhere")
    with pytest.raises(ApiError):
        w.commit()
    assert temp_files(store) == []
    outside = [p for p in store.root.parent.rglob("*") if p.is_file()]
    assert outside == []
    with pytest.raises(ApiError):
        store.delete(fp)
    with pytest.raises(ApiError):
        store.open_chunks(fp)


def test_files_of_different_owners_are_apart(store):
    put(store, "alice/same", b"alice's")
    put(store, "bob/same", b"bob's")
    assert read_all(store, "alice/same") == b"alice's"
    assert read_all(store, "bob/same") == b"bob's"
    assert sorted(os.listdir(store.files_dir)) == ["alice", "bob"]


# -- commits off the event loop, with shared folder fsyncs -------------------------------------


class HeldSync:
    """The real folder fsync, counted, each held until the test lets it go."""

    def __init__(self):
        self.calls = []  # folders, in the order their fsyncs started
        self.release = threading.Event()

    def __call__(self, folder):
        self.calls.append(folder)
        assert self.release.wait(30), "the test never let the fsync go"
        fsync_dir(folder)


async def until(predicate, what, timeout=30.0):
    """Let the loop run until ``predicate()`` holds (bounded in time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_renames_made_while_a_folder_sync_runs_share_the_next_one(tmp_path):
    held = HeldSync()
    folders = FolderSyncer(held)

    async def main():
        first = asyncio.ensure_future(folders.sync(tmp_path))
        await until(lambda: len(held.calls) == 1, "the first fsync to start")
        # Renamed after the first fsync started: it may not cover them; they wait for one more.
        later = [asyncio.ensure_future(folders.sync(tmp_path)) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert not first.done() and not any(f.done() for f in later)
        held.release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), 30)
        assert held.calls == [str(tmp_path)] * 2  # six callers, two fsyncs

    asyncio.run(main())


def test_a_failed_folder_sync_reaches_its_callers_and_the_next_sync_still_runs(tmp_path):
    gone = tmp_path / "gone"

    async def main():
        folders = FolderSyncer()
        with pytest.raises(FileNotFoundError):
            await folders.sync(gone)
        await asyncio.wait_for(folders.sync(tmp_path), 30)

    asyncio.run(main())


def test_async_commit_leaves_the_loop_free_while_the_disk_answers(store):
    held = HeldSync()
    store.folders = FolderSyncer(held)
    ticks = []

    async def main():
        w = store.writer(parse_path("alice/async.bin"), "sha256")
        w.write(DATA)
        commit = asyncio.ensure_future(w.commit_async(hashlib.sha256(DATA).hexdigest()))
        await until(lambda: held.calls, "the folder fsync to start")
        for _ in range(3):  # the loop turns while the fsync is held
            ticks.append(time.monotonic())
            await asyncio.sleep(0)
        assert on_disk(store, "alice/async.bin").read_bytes() == DATA and not commit.done()
        held.release.set()
        return await asyncio.wait_for(commit, 30)

    assert asyncio.run(main()) == hashlib.sha256(DATA).hexdigest() and len(ticks) == 3
    assert store.used_bytes() == len(DATA) and not list(store.tmp_dir.iterdir())


def test_async_commit_of_an_upload_aborted_meanwhile_stores_nothing(store):
    async def main():
        w = store.writer(parse_path("alice/left.bin"), "sha256")
        w.write(DATA)
        commit = asyncio.ensure_future(w.commit_async())
        await asyncio.sleep(0)  # the commit runs up to its first wait: the file's fsync
        assert not commit.done()
        w.abort()  # the sender went away while the file's fsync ran
        with pytest.raises(ApiError):
            await asyncio.wait_for(commit, 30)

    asyncio.run(main())
    assert not on_disk(store, "alice/left.bin").exists() and not list(store.tmp_dir.iterdir())


def test_async_commit_refuses_a_wrong_digest_and_keeps_the_old_file(store):
    put(store, "alice/kept.txt", b"old bytes")

    async def main():
        w = store.writer(parse_path("alice/kept.txt"), "sha256")
        w.write(DATA)
        with pytest.raises(DigestMismatch):
            await w.commit_async(hashlib.sha256(b"other").hexdigest())

    asyncio.run(main())
    assert on_disk(store, "alice/kept.txt").read_bytes() == b"old bytes"
    assert not list(store.tmp_dir.iterdir())


def test_a_body_synced_ahead_is_committed_and_one_aborted_after_its_sync_is_not(store):
    """``presync`` fsyncs the temp file early and places nothing; the commit then places it.
    An abort after it leaves nothing, and bytes written after it are synced by the commit."""
    async def main():
        w = store.writer(parse_path("alice/early.bin"), "sha256")
        w.write(DATA)
        w.presync()
        await asyncio.sleep(0.05)
        assert not on_disk(store, "alice/early.bin").exists()
        w.write(b"more")  # after the sync ahead: the commit syncs again
        digest = await asyncio.wait_for(w.commit_async(), 30)
        assert digest == hashlib.sha256(DATA + b"more").hexdigest()

        gone = store.writer(parse_path("alice/gone.bin"), "sha256")
        gone.write(DATA)
        gone.presync()
        commit = asyncio.ensure_future(gone.commit_async())
        await asyncio.sleep(0)
        gone.abort()
        with pytest.raises(ApiError):
            await asyncio.wait_for(commit, 30)

    asyncio.run(main())
    assert on_disk(store, "alice/early.bin").read_bytes() == DATA + b"more"
    assert not on_disk(store, "alice/gone.bin").exists() and not list(store.tmp_dir.iterdir())


def test_full_buffers_are_hashed_and_written_by_a_worker_thread(store, monkeypatch):
    # The event loop reads the next MiB from TLS meanwhile; the end of the body is written
    # inline (a hand-off would cost more than it saves).
    writes, real_write = [], os.write

    def spy(fd, data):
        writes.append((threading.current_thread().name, len(data)))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    data = os.urandom(3 * MiB + 5)
    assert put(store, "alice/big", data, chunk=256 << 10) == hashlib.sha256(data).hexdigest()
    assert on_disk(store, "alice/big").read_bytes() == data
    assert [n for _, n in writes] == [MiB] * 3 + [5]
    assert all(name.startswith("diskwrite") for name, _ in writes[:3])
    assert writes[3][0] == threading.current_thread().name


def test_a_write_that_fails_behind_is_the_next_calls_error_and_leaves_nothing(store, monkeypatch):
    real_write = os.write

    def full_disk(fd, data):
        if len(data) >= MiB:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    w = store.writer(parse_path("alice/big"), "sha256")
    w.write(os.urandom(MiB))  # a full buffer: it goes behind, the error comes later
    with pytest.raises(InsufficientStorage):
        w.commit()
    assert temp_files(store) == [] and not store.exists(parse_path("alice/big"))


def test_an_abort_waits_for_the_write_behind_before_closing_the_file(store, monkeypatch):
    # Closing the descriptor under the thread would make its write fail, or land in whatever
    # file took the descriptor's number next.
    started, release, errors, real_write = threading.Event(), threading.Event(), [], os.write

    def slow(fd, data):
        if len(data) >= MiB:
            started.set()
            assert release.wait(10)
        try:
            return real_write(fd, data)
        except OSError as e:
            errors.append(e)
            raise

    monkeypatch.setattr(os, "write", slow)
    w = store.writer(parse_path("alice/big"), "sha256")
    w.write(os.urandom(MiB))
    assert started.wait(10)
    aborting = threading.Thread(target=w.abort)
    aborting.start()
    aborting.join(0.3)
    assert aborting.is_alive()  # still waiting for the write
    release.set()
    aborting.join(10)
    assert not aborting.is_alive()
    assert errors == [] and temp_files(store) == []


def test_the_free_space_checked_before_a_buffer_counts_the_one_written_behind(tmp_path, monkeypatch):
    # A small file system: its free space is what the files in it leave. The buffer written
    # behind must have landed before the next one is checked, or a body reaches into the
    # reserve by up to a buffer.
    store = DiskStore(tmp_path / "node", reserve_bytes=MiB)
    total = MiB + 2 * MiB + MiB // 2  # the reserve and 2.5 MiB of room

    def usage(_path):
        used = sum(os.path.getsize(p) for p in store.tmp_dir.iterdir())
        return types.SimpleNamespace(total=total, used=used, free=total - used)

    real_write = os.write

    def slow(fd, data):  # the buffer behind lands late
        if threading.current_thread().name.startswith("diskwrite"):
            time.sleep(0.05)
        return real_write(fd, data)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    monkeypatch.setattr(os, "write", slow)
    w = store.writer(parse_path("alice/big"), "sha256")
    with pytest.raises(InsufficientStorage):
        for _ in range(12):  # 3 MiB: more than the room
            w.write(os.urandom(256 << 10))
        w.commit()
    assert temp_files(store) == [] and not store.exists(parse_path("alice/big"))


def _direct_supported(folder):
    probe = folder / "direct-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


@pytest.fixture
def direct_store(store):
    if not _direct_supported(store.tmp_dir):
        pytest.skip(f"the file system of {store.tmp_dir} refuses O_DIRECT (tmpfs before Linux "
                    "6.6); the writer's fallback for it is tested without O_DIRECT below")
    return store


def _pwrites(monkeypatch, fail=None):
    """Record each ``os.pwrite`` as (thread name, O_DIRECT or not, bytes); ``fail(direct)``
    may return an OSError to raise instead."""
    calls, real_pwrite = [], os.pwrite

    def spy(fd, data, offset):
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        calls.append((threading.current_thread().name, direct, len(data)))
        error = fail(direct) if fail else None
        if error is not None:
            raise error
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", spy)
    return calls


def test_a_direct_writer_writes_full_buffers_around_the_page_cache(direct_store, monkeypatch):
    # A replica's big copy: each full MiB goes through an O_DIRECT descriptor in a worker
    # thread, the end of the body through the page cache inline.
    calls = _pwrites(monkeypatch)
    data = os.urandom(3 * MiB + 5)
    w = direct_store.writer(parse_path("alice/copy"), "sha256", direct=True)
    for i in range(0, len(data), 16 << 10):  # TLS records' size
        w.write(data[i:i + (16 << 10)])
    assert w.commit() == hashlib.sha256(data).hexdigest()
    assert on_disk(direct_store, "alice/copy").read_bytes() == data
    assert [(direct, n) for _, direct, n in calls] == [(True, MiB)] * 3
    assert all(name.startswith("diskwrite") for name, _, _ in calls)
    assert temp_files(direct_store) == []


def test_without_direct_the_writer_never_writes_around_the_page_cache(direct_store, monkeypatch):
    calls = _pwrites(monkeypatch)
    data = os.urandom(2 * MiB)
    assert put(direct_store, "alice/own", data, chunk=16 << 10) == hashlib.sha256(data).hexdigest()
    assert calls == []


def test_a_direct_write_the_device_refuses_in_part_is_finished_through_the_page_cache(
        direct_store, monkeypatch):
    # EINVAL: what is left is not aligned (a short write before it); the bytes still land.
    calls = _pwrites(monkeypatch, fail=lambda direct: OSError(errno.EINVAL, "Invalid") if direct
                     else None)
    data = os.urandom(2 * MiB + 7)
    w = direct_store.writer(parse_path("alice/copy"), "sha256", direct=True)
    w.write(data)
    assert w.commit() == hashlib.sha256(data).hexdigest()
    assert on_disk(direct_store, "alice/copy").read_bytes() == data
    assert [direct for _, direct, _ in calls] == [True, False, True, False]


def test_a_full_disk_under_a_direct_write_is_the_next_calls_error_and_leaves_nothing(
        direct_store, monkeypatch):
    _pwrites(monkeypatch, fail=lambda direct: OSError(errno.ENOSPC, "No space left on device"))
    w = direct_store.writer(parse_path("alice/copy"), "sha256", direct=True)
    w.write(os.urandom(MiB))
    with pytest.raises(InsufficientStorage):
        w.commit()
    assert temp_files(direct_store) == [] and not direct_store.exists(parse_path("alice/copy"))


def test_where_the_file_system_refuses_o_direct_a_direct_writer_writes_through_the_page_cache(
        store, monkeypatch):
    # tmpfs before Linux 6.6 refuses O_DIRECT at open: the copy is written as any other.
    real_open = os.open

    def refusing(path, flags, *args, **kw):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", refusing)
    calls = _pwrites(monkeypatch)
    data = os.urandom(2 * MiB + 3)
    w = store.writer(parse_path("alice/copy"), "sha256", direct=True)
    w.write(data)
    assert w.commit() == hashlib.sha256(data).hexdigest()
    assert on_disk(store, "alice/copy").read_bytes() == data
    assert calls == [] and temp_files(store) == []


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_a_body_read_into_the_writer_in_place_is_stored_as_one_written(store, direct):
    """``space``/``filled``: what a body decrypted straight into the write buffer stores
    (common/direct_bodies.py) is byte for byte what ``write`` stores, with the same digest
    and read checksums."""
    data = os.urandom(3 * MiB + 12_345)
    copied = store.writer(parse_path("alice/copied"), "sha256", direct=direct)
    in_place = store.writer(parse_path("alice/in-place"), "sha256", direct=direct)
    for i in range(0, len(data), 16 << 10):
        copied.write(data[i:i + (16 << 10)])
    done = 0
    while done < len(data):
        space = in_place.space()
        n = min(len(space), 40_000, len(data) - done)
        space[:n] = data[done:done + n]
        in_place.filled(n)
        done += n
    assert in_place.size == len(data)
    assert in_place.commit() == copied.commit() == hashlib.sha256(data).hexdigest()
    assert in_place.sums.packed() == copied.sums.packed()
    assert on_disk(store, "alice/in-place").read_bytes() == data
