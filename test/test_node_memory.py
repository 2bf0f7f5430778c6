"""What a node holds in memory while bytes stream through it: two reused buffers per upload
and two per download (nodes/buffers.py), and no module it never uses at rest."""
import errno
import hashlib
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from securifile.common.paths import parse_path
from securifile.launcher.cluster import NODE_ENV
from securifile.nodes.buffers import Gather, ReadBehind, read_views
from securifile.nodes.diskfile import WRITE_BUFFER, DiskStore
from securifile.nodes.download import verified

from .helpers import refuse_reads_without_waiting

MiB = 1 << 20


def gathered(pieces, capacity):
    """What ``put`` received, as (bytes, the buffer object it was a view of or None)."""
    got = []

    def put(data):
        got.append((bytes(data), data.obj if isinstance(data, memoryview) else None))

    g = Gather(capacity, put)
    for p in pieces:
        g.add(p)
    g.drain()
    return got


def test_a_big_body_goes_out_in_full_buffers_of_one_reused_bytearray():
    body = os.urandom(100_000)
    pieces = [body[i:i + 3000] for i in range(0, len(body), 3000)]  # 34 pieces, uneven end
    got = gathered(pieces, 16_384)
    assert b"".join(data for data, _ in got) == body
    assert [len(data) for data, _ in got] == [16_384] * 6 + [100_000 - 6 * 16_384]
    assert len({id(obj) for _, obj in got}) == 1  # one buffer, reused
    assert isinstance(got[0][1], bytearray)


def test_with_two_buffers_a_full_one_is_left_alone_until_the_put_after_it_returns():
    body = os.urandom(100_000)
    views, intact = [], []

    def put(view):
        if views:  # the one before: written behind meanwhile, it must not have changed
            before, want = views[-1]
            intact.append(bytes(before) == want)
        views.append((view, bytes(view)))

    g = Gather(16_384, put, buffers=2)
    for i in range(0, len(body), 3000):
        g.add(body[i:i + 3000])
    g.drain()
    assert b"".join(want for _, want in views) == body
    assert intact == [True] * (len(views) - 1)
    assert len({id(v.obj) for v, _ in views}) == 2


def test_a_small_body_never_allocates_the_buffer():
    got = gathered([b"abc", b"def"], 16_384)
    assert got == [(b"abcdef", None)]


def test_a_piece_as_big_as_the_buffer_goes_out_as_it_is():
    piece = os.urandom(20_000)
    seen = []
    g = Gather(16_384, seen.append)
    g.add(piece)
    assert seen[0] is piece
    g.add(b"x")
    g.clear()  # a rewound body: what was gathered is forgotten
    g.drain()
    assert len(seen) == 1


@pytest.mark.parametrize("ahead, cached", [(False, True), (True, True), (True, False)],
                         ids=["inline", "ahead", "ahead from disk"])
@pytest.mark.parametrize("start, end", [(0, None), (0, 50_000), (5, 49_999), (16_384, 32_768)])
def test_read_views_reads_a_range_into_two_buffers_in_turn(tmp_path, request, start, end, ahead,
                                                          cached):
    if not cached:
        request.getfixturevalue("from_disk")
    data = os.urandom(50_000)
    (tmp_path / "f").write_bytes(data)
    views, copies = [], []
    for view in read_views(open(tmp_path / "f", "rb", buffering=0), start, end, 4096,
                           ahead=ahead):
        views.append(view)
        copies.append(bytes(view))  # used before the next read, as a download does
    assert b"".join(copies) == data[start:end]
    assert len({id(v.obj) for v in views}) == 2


def test_a_writer_holds_two_buffers_however_big_the_body(tmp_path):
    store = DiskStore(tmp_path / "node")
    w = store.writer(parse_path("alice/big"), "sha256")
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(64):  # 16 MiB in fresh pieces of the node's body chunk, as they arrive
            piece = os.urandom(256 << 10)
            w.write(piece)
            digest.update(piece)
            del piece
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert w.commit() == digest.hexdigest()
    # The two 1 MiB buffers (one filled while the other is written) and the piece in hand.
    # Keeping the pieces until a MiB was there, then joining them, held a MiB of pieces and
    # a fresh MiB beside every buffer.
    assert 2 * WRITE_BUFFER <= peak < 2 * WRITE_BUFFER + 3 * MiB // 8, peak


def test_a_node_does_not_load_the_cryptography_package_at_start():
    # About 10 MiB of a node's memory: tokens load it on first use (common/tokens.py).
    code = ("import sys, securifile.nodes.main; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'cryptography', 'jwt'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_a_node_started_by_the_launcher_leaves_the_systems_ca_store_unloaded(cluster):
    # aiohttp fills two default contexts from it at import (about 3 MiB); a node uses only
    # the contexts it makes with the cluster's CA.
    environ = (Path("/proc") / str(cluster.procs["node1"].pid) / "environ").read_bytes()
    env = dict(item.split("=", 1) for item in environ.decode().split("\0") if "=" in item)
    assert {k: env.get(k) for k in NODE_ENV} == NODE_ENV
    code = ("import securifile.nodes.main, aiohttp.connector as c; "
            "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env={**os.environ, **env}).stdout
    assert out.strip() == "0"


class Spied:
    """A file whose reads note the thread they run in, and may wait to be let go."""

    def __init__(self, path):
        self.f = open(path, "rb", buffering=0)
        self.events, self.gate = [], None

    def readinto(self, view):
        if self.gate is not None and threading.current_thread().name.startswith("diskread"):
            self.events.append("waiting")
            assert self.gate.wait(10)
        n = self.f.readinto(view)
        self.events.append(("read", threading.current_thread().name, n))
        return n

    def seek(self, offset):
        return self.f.seek(offset)

    def fileno(self):
        return self.f.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.events.append("closed")
        self.f.close()


def worker_reads(f):
    return [n for e in f.events if e != "closed" for _, name, n in [e]
            if name.startswith("diskread")]


def test_with_ahead_a_file_the_page_cache_holds_is_read_without_a_worker(tmp_path):
    data = os.urandom(50_000)
    (tmp_path / "f").write_bytes(data)  # just written: in the page cache
    f = Spied(tmp_path / "f")
    try:
        os.preadv(f.fileno(), [bytearray(1)], 0, os.RWF_NOWAIT)
        can_tell = True
    except OSError:  # e.g. EOPNOTSUPP: this file system cannot read without waiting
        can_tell = False
    assert b"".join(bytes(v) for v in read_views(f, 0, None, 16_384, ahead=True)) == data
    reads = [e for e in f.events if e != "closed"]
    if can_tell:
        # Only the reads that find the end of the file (after the short last chunk), here.
        assert reads and set(reads) == {("read", threading.current_thread().name, 0)}, reads
    else:  # such a file system counts as the disk: the worker reads ahead, as below
        assert worker_reads(f), reads


def test_a_file_system_that_cannot_read_without_waiting_counts_as_the_disk(tmp_path,
                                                                          monkeypatch):
    data = os.urandom(50_000)
    (tmp_path / "f").write_bytes(data)
    refuse_reads_without_waiting(monkeypatch, OSError(errno.EOPNOTSUPP, "not supported"))
    f = Spied(tmp_path / "f")
    assert b"".join(bytes(v) for v in read_views(f, 0, 50_000, 16_384, ahead=True)) == data
    assert worker_reads(f) == [16_384, 16_384, 50_000 - 3 * 16_384]


def test_once_a_read_waits_for_the_disk_the_next_chunks_are_read_by_a_worker(tmp_path,
                                                                             from_disk):
    data = os.urandom(50_000)
    (tmp_path / "f").write_bytes(data)
    f = Spied(tmp_path / "f")
    assert b"".join(bytes(v) for v in read_views(f, 0, 50_000, 16_384, ahead=True)) == data
    reads = [e for e in f.events if e != "closed"]
    assert [n for _, _, n in reads] == [16_384] * 3 + [50_000 - 3 * 16_384]
    assert reads[0][1] == threading.current_thread().name  # the first: nothing to overlap
    assert all(name.startswith("diskread") for _, name, _ in reads[1:])


def test_a_consumer_that_awaits_the_reads_is_never_held_by_the_disk(tmp_path, from_disk):
    # With a ReadBehind (as a download has), every read the disk must serve is a worker's,
    # the first too, and a chunk whose read is still running comes as an empty view: the
    # event loop awaits the read instead of waiting inside the generator.
    data = os.urandom(50_000)
    (tmp_path / "f").write_bytes(data)
    f = Spied(tmp_path / "f")
    f.gate = threading.Event()
    behind = ReadBehind()
    views = read_views(f, 0, len(data), 16_384, buffers=3, ahead=True, behind_read=behind)
    got, empties = [], 0
    for _ in range(100):
        view = next(views, None)  # returns at once, the gate closed or not
        if view is None:
            break
        if not view:
            empties += 1
            assert not behind.future.done()
            f.gate.set()  # the disk answers
            behind.future.result(10)
            f.gate.clear()
            continue
        got.append(bytes(view))
    assert b"".join(got) == data
    reads = [e for e in f.events if isinstance(e, tuple)]
    assert empties == 4 and [n for _, _, n in reads] == [16_384] * 3 + [50_000 - 3 * 16_384]
    assert all(name.startswith("diskread") for _, name, _ in reads)


def test_a_download_stopped_early_closes_its_file_only_after_the_read_behind(tmp_path,
                                                                           from_disk):
    # A client that goes away mid-download: the file must not close under the worker's read.
    (tmp_path / "f").write_bytes(os.urandom(50_000))
    f = Spied(tmp_path / "f")
    f.gate = threading.Event()
    views = read_views(f, 0, None, 16_384, ahead=True)
    next(views)  # the second chunk is now being read behind, held at the gate
    closing = threading.Thread(target=views.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive()  # waiting for the read
    f.gate.set()
    closing.join(10)
    assert not closing.is_alive()
    assert f.events[-2][0] == "read" and f.events[-1] == "closed"


def test_a_consumer_that_holds_one_chunk_back_gets_intact_chunks_from_three_buffers(tmp_path,
                                                                                   from_disk):
    # The digest check of a whole read holds a chunk until the next is read (download.py);
    # each chunk is copied only once the read ahead of it has landed (with two buffers it
    # would land in the held chunk).
    data = os.urandom(10 * 4096)
    (tmp_path / "f").write_bytes(data)
    f = Spied(tmp_path / "f")
    views = read_views(f, 0, len(data), 4096, buffers=3, ahead=True)
    out = []
    for k, chunk in enumerate(verified(views, hashlib.sha256(), hashlib.sha256(data).hexdigest())):
        deadline = time.monotonic() + 10
        while len([e for e in f.events if e[0] == "read"]) < min(k + 3, 10):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        out.append(bytes(chunk))
    assert b"".join(out) == data


def test_aligned_gather_hands_over_only_page_aligned_buffers():
    # O_DIRECT writes need page-aligned memory: a piece a whole buffer long is copied into
    # one rather than handed over as it came.
    import ctypes
    import mmap

    got = []

    def put(view):
        got.append((ctypes.addressof(ctypes.c_char.from_buffer(view)), bytes(view)))

    g = Gather(WRITE_BUFFER, put, buffers=2, aligned=True)
    whole = bytearray(os.urandom(WRITE_BUFFER))
    g.add(whole)
    for i in range(0, WRITE_BUFFER, 16 << 10):
        g.add(whole[i:i + (16 << 10)])
    assert [data == whole for _, data in got] == [True, True]
    assert all(address % mmap.PAGESIZE == 0 for address, _ in got)
    assert got[0][0] != ctypes.addressof(ctypes.c_char.from_buffer(whole))


def test_a_body_read_in_place_fills_the_same_buffers_as_one_copied_in():
    """``space``/``took`` (a body decrypted straight into the buffer) put the same full
    buffers, of the same reused objects, as ``add``; pieces kept while the body was small
    go first."""
    body = os.urandom(100_000)
    views, intact = [], []

    def put(view):
        if views:
            before, want = views[-1]
            intact.append(bytes(before) == want)
        views.append((view, bytes(view)))

    g = Gather(16_384, put, buffers=2)
    g.add(body[:10])  # small so far: kept as a piece
    done = 10
    while done < len(body):
        space = g.space()
        n = min(len(space), 5000, len(body) - done)  # a read brings what it brings
        space[:n] = body[done:done + n]
        g.took(n)
        done += n
    g.drain()
    assert b"".join(want for _, want in views) == body
    assert [len(want) for _, want in views] == [16_384] * 6 + [100_000 - 6 * 16_384]
    assert intact == [True] * (len(views) - 1)
    assert len({id(v.obj) for v, _ in views}) == 2
