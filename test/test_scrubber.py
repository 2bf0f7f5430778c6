"""The scrubber and the quarantine on real temp folders and location maps; verified reads."""
import asyncio
import hashlib
import os
import threading
import time
from dataclasses import replace

import pytest

from securifile.common.digests import new_hasher
from securifile.common.paths import FilePath
from securifile.common.syslog import MSGID_INTEGRITY
from securifile.nodes.challenge import stat_key
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.download import CopyCorrupt, verified
from securifile.common.durable import FolderSyncer
from securifile.nodes.locationmap import Location, LocationMap
from securifile.nodes import orphans
from securifile.nodes.locks import LockTable
from securifile.nodes.orphans import sweep_orphans
from securifile.nodes.quarantine import quarantine_if_bad
from securifile.nodes.scrubber import CURSOR, Pace, Scrubber

from .helpers import Killed, killed_after
from .test_diskfile import HeldSync, until


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Audit:
    def __init__(self):
        self.events = []

    def log_event(self, event):
        self.events.append(event)


class Node:
    """What the scrubber and the quarantine use of a StorageNode, on a real disk and map;
    ``copy_lost`` is recorded (StorageNode publishes the stale record)."""

    name = "n1"
    algorithm = "sha256"

    def __init__(self, root):
        self.store = DiskStore(root)
        self.locations = LocationMap(root / "locations.sqlite3")
        self.locks = LockTable()
        self.audit = Audit()
        self.quarantined = 0
        self.lost = []

    async def copy_lost(self, fp, reason):
        self.lost.append((fp.full, reason))

    def put(self, rel, data, version=1):
        fp = FilePath("alice", rel)
        path = self.store.path_for(fp)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.locations.apply(Location("alice", rel, "n1", sha(data), "sha256", len(data), version))
        self.locations.record_copy(fp, version, sha(data), len(data), stat_key(path))
        return fp


class FakeTime:
    """A clock that moves only when someone sleeps (the loop or the hashing thread)."""

    def __init__(self):
        self.now = 100.0
        self.slept = []  # (where, seconds)

    def clock(self):
        return self.now

    async def sleep(self, seconds):
        self.slept.append(("loop", seconds))
        self.now += seconds

    def thread_sleep(self, seconds):
        self.slept.append(("thread", seconds))
        self.now += seconds


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    yield n
    n.locations.close()


def scrubber(node, fake, bps=1e9, fps=1000.0, interval=60.0):
    return Scrubber(node, bps, fps, interval, clock=fake.clock, sleep=fake.sleep,
                    thread_sleep=fake.thread_sleep)


def rot(path, offset):
    """Flip one byte in place, keeping size and mtime (what bit rot looks like)."""
    st = os.stat(path)
    fd = os.open(path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 0x01]), offset)
    finally:
        os.close(fd)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_a_flipped_byte_is_quarantined_logged_and_reported_lost(node):
    fake = FakeTime()
    good = {f"docs/{i}.bin": os.urandom(3000 + i) for i in range(4)}
    for rel, data in good.items():
        node.put(rel, data)
    bad = node.put("docs/rotten.bin", os.urandom(50_000))
    path = node.store.path_for(bad)
    rot(path, 12_345)

    report = asyncio.run(scrubber(node, fake).run_once())
    assert (report.checked, report.bad, report.errors, report.wrapped) == (5, 1, 0, True)
    assert not path.exists()
    moved = list((node.store.root / "quarantine" / "alice" / "docs").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("rotten.bin.")
    assert node.locations.copy_record(bad) is None  # forgotten: never served from here
    assert node.lost == [("alice/docs/rotten.bin", "scrub found alice/docs/rotten.bin changed "
                          "on disk")]
    assert node.quarantined == 1
    (event,) = node.audit.events
    assert event.msgid == MSGID_INTEGRITY and "alice/docs/rotten.bin" in event.msg
    assert "quarantined" in event.msg
    for rel, data in good.items():  # the good copies stay, their fresh hash cached
        fp = FilePath("alice", rel)
        assert node.store.path_for(fp).read_bytes() == data
        assert node.locations.copy_record(fp).disk_digest == sha(data)


def test_a_copy_that_hashes_right_is_never_quarantined(node):
    fp = node.put("fine.bin", os.urandom(10_000))
    assert asyncio.run(quarantine_if_bad(node, fp, "a suspicious read")) is False
    assert node.store.path_for(fp).exists() and node.lost == [] and node.audit.events == []


def test_a_copy_replaced_by_a_new_version_while_hashed_is_left_alone(node):
    """The damage is confirmed against the copy that was read: a new version renamed into
    place meanwhile (another inode, another committed digest) is not the copy found bad."""
    fp = node.put("moving.bin", os.urandom(10_000))
    rot(node.store.path_for(fp), 10)

    async def scenario():
        real = asyncio.to_thread

        async def to_thread_then_replace(func, *args, **kw):
            result = await real(func, *args, **kw)
            node.put("moving.bin", b"version two", version=2)  # committed while we hashed
            return result

        asyncio.to_thread = to_thread_then_replace
        try:
            return await quarantine_if_bad(node, fp, "read")
        finally:
            asyncio.to_thread = real

    assert asyncio.run(scenario()) is False
    assert node.store.path_for(fp).read_bytes() == b"version two" and node.lost == []


def test_a_new_version_at_its_name_before_its_record_is_left_alone(node):
    """A commit renames the new version into place, syncs the folder, and only then records
    the copy: a read or scrub in between hashes good new bytes against the old record. Seen
    in a nemesis run: a verified read quarantined the upload just committed, and the upload
    failed with 500 when it came to record its copy."""
    fp = node.put("racing.bin", b"version one")
    held = HeldSync()
    node.store.folders = FolderSyncer(held)

    async def scenario():
        w = node.store.writer(fp, "sha256")
        w.write(b"version two")
        commit = asyncio.ensure_future(w.commit_async())
        await until(lambda: held.calls, "the commit to rename and sync the folder")
        verdict = await quarantine_if_bad(node, fp, "a read that raced the commit")
        held.release.set()
        await asyncio.wait_for(commit, 30)
        return verdict

    assert asyncio.run(scenario()) is False
    assert node.store.path_for(fp).read_bytes() == b"version two"
    assert node.lost == [] and node.quarantined == 0


def test_a_file_whose_lock_is_held_here_is_left_alone(node):
    """A write holds the file's lock here from before its rename until its record: the
    coordinator's big upload records its copy only after its replicas confirmed theirs."""
    fp = node.put("locked.bin", b"version one")
    node.locks.acquire(fp, "alice", "n2", "token", 30.0)
    os.replace(_written(node, b"version two"), node.store.path_for(fp))
    assert asyncio.run(quarantine_if_bad(node, fp, "a read during the write")) is False
    assert node.store.path_for(fp).read_bytes() == b"version two" and node.lost == []
    node.locks.release(fp, "token")  # the write is over: bytes its record does not name go
    assert asyncio.run(quarantine_if_bad(node, fp, "a read after the write")) is True


def _written(node, data):
    path = node.store.tmp_dir / "new"
    path.write_bytes(data)
    return path


def test_the_rate_bounds_hold_by_count_and_by_bytes(node):
    for i in range(10):
        node.put(f"f{i:02d}", os.urandom(5000))
    fake = FakeTime()
    report = asyncio.run(scrubber(node, fake, fps=3).run_once())
    assert report.checked == 3 and not report.wrapped  # a slice is a second's worth of files
    assert fake.now - 100.0 == pytest.approx(1.0)  # 3 files at 3 files/s take a second

    fake = FakeTime()
    report = asyncio.run(scrubber(node, fake, bps=10_000, fps=1000).run_once())
    assert report.checked == 7 and report.wrapped  # the rest of the pass
    hashing = sum(s for where, s in fake.slept if where == "thread")
    assert hashing == pytest.approx(7 * 5000 / 10_000)  # paced in the hashing thread
    assert fake.now - 100.0 == pytest.approx(3.5)


def test_pace_waits_only_what_the_rate_asks():
    t = [0.0]
    pace = Pace(100, lambda: t[0])
    assert pace.add(50) == pytest.approx(0.5)
    t[0] = 2.0  # slower than the rate already: no wait
    assert pace.add(50) == 0.0


def test_the_cursor_survives_a_restart_and_wraps_after_a_full_pass(node):
    names = [f"f{i}" for i in range(5)]
    for name in names:
        node.put(name, os.urandom(100))
    fake = FakeTime()
    seen = []
    real_copies_after = node.locations.copies_after

    def recording(owner, path, limit):
        rows = real_copies_after(owner, path, limit)
        seen.append([r[1] for r in rows])
        return rows

    node.locations.copies_after = recording
    asyncio.run(scrubber(node, fake, fps=2).run_once())
    assert node.locations.get_state(CURSOR) == ["alice", "f1"]
    asyncio.run(scrubber(node, fake, fps=2).run_once())  # a new scrubber: a restarted node
    report = asyncio.run(scrubber(node, fake, fps=2).run_once())
    assert report.wrapped and node.locations.get_state(CURSOR) == ["", ""]
    asyncio.run(scrubber(node, fake, fps=2).run_once())
    assert seen == [["f0", "f1"], ["f2", "f3"], ["f4"], ["f0", "f1"]]


def test_one_bad_item_is_counted_and_the_slice_goes_on(node):
    node.put("a", b"first")
    broken = node.put("b", b"second")
    path = node.store.path_for(broken)
    path.unlink()
    path.mkdir()  # reading a folder fails: an error, not a verdict on the copy
    node.put("c", b"third")
    s = scrubber(node, FakeTime())
    report = asyncio.run(s.run_once())
    assert (report.checked, report.bad, report.errors, report.wrapped) == (2, 0, 1, True)
    assert s.totals.errors == 1 and node.lost == []


def test_verified_chunks_hold_back_the_last_until_the_digest_matches():
    chunks = [b"a" * 10, b"b" * 10, b"c" * 3]
    whole = b"".join(chunks)
    assert list(verified(iter(chunks), new_hasher("sha256"), sha(whole))) == chunks
    got = []
    with pytest.raises(CopyCorrupt):
        for chunk in verified(iter(chunks), new_hasher("sha256"), sha(whole + b"!")):
            got.append(chunk)
    assert got == chunks[:-1]  # never the whole (wrong) file
    assert list(verified(iter([]), new_hasher("sha256"), sha(b""))) == []


def test_nothing_is_scrubbed_while_the_node_is_not_running(node):
    """A node just back is judged by its peers' challenges: a copy damaged while it was away
    must fail it, not be quietly quarantined first."""
    fp = node.put("f", os.urandom(1000))
    rot(node.store.path_for(fp), 3)
    running = [False]
    s = Scrubber(node, 1e9, 100, 60, clock=FakeTime().clock, sleep=FakeTime().sleep,
                 may_run=lambda: running[0])
    report = asyncio.run(s.run_once())
    assert report.checked == 0 and node.lost == [] and node.store.path_for(fp).exists()
    running[0] = True
    assert asyncio.run(s.run_once()).bad == 1 and node.lost


def test_a_scrub_gives_a_copy_without_read_checksums_its_checksums(node):
    """A copy that a resumable upload assembled, or one from before the checksums, gets them
    from the scrub that found it sound: for that very file, one per MiB; a bad copy none."""
    from crc32c import crc32c

    from securifile.nodes.chunksums import CHUNK, unpack
    data = os.urandom(2 * CHUNK + 99)
    good, bad = node.put("good", data), node.put("bad", data)
    rot(node.store.path_for(bad), 5)
    asyncio.run(scrubber(node, FakeTime()).run_once())
    path = node.store.path_for(good)
    sums = unpack(node.locations.chunk_sums(good, stat_key(path)), len(data))
    assert list(sums) == [crc32c(data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]
    assert node.locations.copy_record(bad) is None and node.quarantined == 1  # none for it


@pytest.mark.parametrize("step", ["quarantine", "forget_copy"])
def test_a_quarantine_cut_short_by_a_kill_never_leaves_a_recorded_copy_gone(node, monkeypatch,
                                                                             step):
    """Moving a bad copy aside and forgetting its record are two steps; a node killed
    between them must not keep the record of a copy no longer at its name, which its peers'
    challenge would call missing (a failed node) rather than stale (a copy to repair)."""
    fp = node.put("docs/rotten.bin", os.urandom(5000))
    path = node.store.path_for(fp)
    path.write_bytes(os.urandom(5000))  # rot
    killed_after(monkeypatch, node.store if step == "quarantine" else node.locations, step)
    with pytest.raises(Killed):
        asyncio.run(quarantine_if_bad(node, fp, "a read"))
    assert node.locations.copy_record(fp) is None or path.is_file()


def _aged(node, fp, seconds):
    path = node.store.path_for(fp)
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def _relocated(node, fp, **change):
    """The file's record one version on, with ``change`` (a tombstone, other holders)."""
    loc = node.locations.get(fp)
    assert node.locations.apply(replace(loc, version=loc.version + 1, **change))


def test_the_sweep_removes_only_old_unrecorded_files_that_no_live_record_keeps_here(node):
    """Files with no copy record whose file is deleted, held elsewhere, or stale here (a
    removal cut short by a kill) are swept. Not: a recorded copy; a file younger than the
    grace; one a commit is renaming in (between its rename and its record); one whose lock
    is held here; and one a live record names this node a current holder of (a commit
    killed before its record, a lost map: maybe the file's last bytes)."""
    kept = node.put("docs/kept.bin", b"recorded")
    deleted, elsewhere, stale = (node.put(f"old/deep/{n}.bin", n.encode())
                                 for n in ("deleted", "elsewhere", "stale"))
    young, renaming, locked, held = (node.put(f"docs/{n}.bin", n.encode())
                                     for n in ("young", "renaming", "locked", "held"))
    unrecorded = [deleted, elsewhere, stale, young, renaming, locked, held]
    for fp in unrecorded:
        node.locations.forget_copy(fp)
    for fp in unrecorded + [kept]:
        _aged(node, fp, 120)
    _aged(node, young, 10)
    _relocated(node, deleted, deleted=True)
    _relocated(node, elsewhere, origin="n2")
    _relocated(node, stale, stale=["n1"])
    node.locks.acquire(locked, "bob", "n2", "token", 30.0)
    with node.store.changing(renaming):
        removed = asyncio.run(sweep_orphans(node, grace=60))
    assert removed == 3
    assert not (node.store.files_dir / "alice" / "old").exists()  # emptied folders go too
    for fp in (kept, young, renaming, locked, held):
        assert node.store.path_for(fp).is_file(), fp
    assert node.locations.copy_record(kept) is not None


def test_a_complete_scrub_pass_sweeps_and_counts_but_not_while_the_node_is_not_running(node):
    kept = node.put("docs/kept.bin", b"recorded")
    orphan = node.put("docs/orphan.bin", b"left behind")
    node.locations.forget_copy(orphan)
    _relocated(node, orphan, deleted=True)
    running = [False]
    s = Scrubber(node, 1e9, 1000.0, 60.0, sleep=lambda seconds: stop_at(s, seconds),
                 may_run=lambda: running[0], orphan_grace=0)
    assert asyncio.run(s.sweep()) == 0 and node.store.path_for(orphan).is_file()
    running[0] = True
    asyncio.run(s.run_forever())  # one pass, the sweep, then the pause: stopped there
    assert not node.store.path_for(orphan).exists() and s.totals.orphans == 1
    assert node.store.path_for(kept).is_file() and s.totals.checked == 1


async def stop_at(scrubber, seconds):
    """The scrubber's sleep, stopping it at the pause after a complete pass."""
    if seconds == scrubber.interval:
        scrubber._stopping = True


def test_a_sweep_cancelled_while_its_thread_walks_ends_cancelled(node, monkeypatch):
    """A node stopping cancels the scrubber mid-walk: the walking thread is still inside the
    walk, and the sweep must end as cancelled, not fail closing the walk under the thread."""
    walking, release = threading.Event(), threading.Event()

    def slow_walk(store):
        walking.set()
        release.wait(10)
        yield []

    monkeypatch.setattr(orphans, "_walk", slow_walk)

    async def scenario():
        task = asyncio.ensure_future(sweep_orphans(node, grace=0))
        await asyncio.to_thread(walking.wait, 10)
        task.cancel()
        try:
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            release.set()

    asyncio.run(scenario())
