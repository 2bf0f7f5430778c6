"""Big files given up are freed by the trash's worker thread, never by the caller (the event
loop): deleted, replaced by a new version, an upload abandoned, a resumable upload removed.
Each test records which thread drops an inode's last name: the one whose blocks are freed."""
import os
import threading
import time

import pytest

from securifile.common.paths import parse_path
from securifile.nodes import trash as trash_module
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.partial_uploads import PartialUploadStore

BIG = trash_module.BIG


class Unlinks:
    """Every ``os.unlink``: the inode it dropped and the thread that dropped it."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = os.unlink

        def unlink(path, *args, **kwargs):
            try:
                inode = os.lstat(path).st_ino
            except OSError:
                inode = None
            self.calls.append((inode, threading.current_thread().name))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", unlink)

    def threads_for(self, inode, timeout=10.0):
        """The threads that unlinked ``inode``, once one has (the worker may be behind)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [thread for ino, thread in self.calls if ino == inode]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)


@pytest.fixture
def store(tmp_path):
    return DiskStore(tmp_path / "node")


def write_big(store, name, size=BIG):
    w = store.writer(parse_path(name), "sha256")
    block = os.urandom(1 << 20)
    for _ in range(size // len(block)):
        w.write(block)
    w.commit()
    return os.stat(store.path_for(parse_path(name))).st_ino


def trash_empty(store, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(store.trash.dir.iterdir()):
            return True
        time.sleep(0.01)
    return False


def test_a_big_file_deleted_is_gone_at_once_and_freed_by_the_worker(store, monkeypatch):
    inode = write_big(store, "alice/big.bin")
    unlinks = Unlinks(monkeypatch)
    assert store.delete(parse_path("alice/big.bin"))
    assert not store.path_for(parse_path("alice/big.bin")).exists()
    assert unlinks.threads_for(inode) and all(
        t.startswith("trash") for t in unlinks.threads_for(inode))
    assert trash_empty(store)
    assert not store.delete(parse_path("alice/big.bin"))  # gone: as before


def test_a_small_file_is_unlinked_at_once(store, monkeypatch):
    fp = parse_path("alice/small.txt")
    w = store.writer(fp, "sha256")
    w.write(b"small")
    w.commit()
    inode = os.stat(store.path_for(fp)).st_ino
    unlinks = Unlinks(monkeypatch)
    assert store.delete(fp)
    assert unlinks.threads_for(inode, timeout=0) == [threading.current_thread().name]


def test_a_big_version_replaced_is_freed_by_the_worker_not_the_rename(store, monkeypatch):
    old = write_big(store, "alice/big.bin")
    unlinks = Unlinks(monkeypatch)
    new = write_big(store, "alice/big.bin", size=1 << 20)
    assert new != old and os.path.getsize(store.path_for(parse_path("alice/big.bin"))) == 1 << 20
    threads = unlinks.threads_for(old)
    assert threads and all(t.startswith("trash") for t in threads)
    assert trash_empty(store)


def test_an_abandoned_big_upload_is_freed_by_the_worker(store, monkeypatch):
    w = store.writer(parse_path("alice/never.bin"), "sha256")
    for _ in range(BIG >> 20):
        w.write(os.urandom(1 << 20))
    w._drain()  # every buffer written out
    inode = os.fstat(w._fd).st_ino
    unlinks = Unlinks(monkeypatch)
    w.abort()
    assert not any(store.tmp_dir.iterdir())
    threads = unlinks.threads_for(inode)
    assert threads and all(t.startswith("trash") for t in threads)


def test_a_removed_resumable_uploads_big_data_is_freed_by_the_worker(store, tmp_path, monkeypatch):
    partials = PartialUploadStore(tmp_path / "node", 60, 2, trash=store.trash)
    upload = partials.create("alice", parse_path("alice/r.bin"), 0, length=BIG)
    data = partials.data_path(upload.id)
    with open(data, "wb") as f:
        f.truncate(BIG)
    inode = os.stat(data).st_ino
    unlinks = Unlinks(monkeypatch)
    partials.remove(upload)
    assert not data.exists()
    threads = unlinks.threads_for(inode)
    assert threads and all(t.startswith("trash") for t in threads)


def test_what_a_crash_left_in_the_trash_goes_at_the_next_start(tmp_path):
    store = DiskStore(tmp_path / "node")
    (store.trash.dir / "tr-left-0").write_bytes(b"x" * 100)
    DiskStore(tmp_path / "node").sweep_temp()
    assert trash_empty(store)
