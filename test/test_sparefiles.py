"""Temp files made ahead by a worker thread (``nodes/sparefiles.py``), on real directories."""
import os
import threading

import pytest

from securifile.common.paths import parse_path
from securifile.nodes import sparefiles
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.sparefiles import SpareFiles

from .helpers import wait_for


@pytest.fixture
def opened(monkeypatch):
    """The threads that created files (``os.open`` with O_CREAT) in sparefiles, in order."""
    creators = []
    real_open = os.open

    def recording_open(path, flags, *args, **kw):
        if flags & os.O_CREAT:
            creators.append(threading.current_thread().name)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(sparefiles.os, "open", recording_open)
    return creators


def test_a_ready_spare_is_taken_without_creating_a_file_on_the_callers_thread(tmp_path, opened):
    spares = SpareFiles(tmp_path / "spare", keep=4)
    (tmp_path / "tmp").mkdir()
    fd, _path = spares.take(tmp_path / "tmp")  # the first starts the maker on four
    os.close(fd)
    wait_for(lambda: len(os.listdir(tmp_path / "spare")) == 4)
    del opened[:]
    fd, path = spares.take(tmp_path / "tmp")
    assert all(name.startswith("sparefiles") for name in opened), opened
    assert threading.current_thread().name not in opened
    # The spare moved into tmp: open, empty, writable through the descriptor handed out.
    assert path.parent == tmp_path / "tmp" and path.is_file()
    assert os.write(fd, b"bytes") == 5
    os.close(fd)
    assert path.read_bytes() == b"bytes"
    wait_for(lambda: len(os.listdir(tmp_path / "spare")) == 4)  # refilled


def test_each_take_gets_a_file_of_its_own(tmp_path):
    spares = SpareFiles(tmp_path / "spare", keep=3)
    (tmp_path / "tmp").mkdir()
    taken = []
    for _ in range(20):  # more than are ever ready: some made ahead, some made at once
        taken.append(spares.take(tmp_path / "tmp"))
    paths = [p for _fd, p in taken]
    assert len(set(paths)) == 20
    for i, (fd, _p) in enumerate(taken):
        os.write(fd, str(i).encode())
        os.close(fd)
    assert [p.read_bytes() for p in paths] == [str(i).encode() for i in range(20)]


def test_sweep_removes_what_a_previous_run_left(tmp_path):
    (tmp_path / "node" / "spare").mkdir(parents=True)
    (tmp_path / "node" / "spare" / "sp-old-1").write_bytes(b"")
    (tmp_path / "node" / "tmp").mkdir()
    (tmp_path / "node" / "tmp" / "sp-old-0").write_bytes(b"half an upload")
    store = DiskStore(tmp_path / "node")
    store.keep_spares()
    store.sweep_temp()
    assert os.listdir(store.tmp_dir) == [] and os.listdir(tmp_path / "node" / "spare") == []


def test_a_store_keeping_spares_commits_and_aborts_as_before(tmp_path):
    store = DiskStore(tmp_path / "node")
    store.keep_spares()
    w = store.writer(parse_path("alice/a.bin"), "sha256")
    w.write(b"first")
    w.commit()
    wait_for(lambda: len(os.listdir(tmp_path / "node" / "spare")) == sparefiles.KEEP)
    kept = store.writer(parse_path("alice/b.bin"), "sha256")
    kept.write(b"second")
    assert [p.name for p in store.tmp_dir.iterdir()] == [kept._tmp.name]
    kept.commit()
    gone = store.writer(parse_path("alice/c.bin"), "sha256")
    gone.write(b"broken off")
    gone.abort()
    assert (store.files_dir / "alice" / "a.bin").read_bytes() == b"first"
    assert (store.files_dir / "alice" / "b.bin").read_bytes() == b"second"
    assert not (store.files_dir / "alice" / "c.bin").exists()
    assert list(store.tmp_dir.iterdir()) == []
    # What waits in spare holds nobody's bytes.
    assert all(p.stat().st_size == 0 for p in (tmp_path / "node" / "spare").iterdir())
