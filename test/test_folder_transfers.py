"""A folder's files moved several at a time (``client/plans.py``): in the plan's order of
results, with progress and per-file news from one thread at a time, stopped by the first
error or a cancel; and the CLI's ``put``/``get --parallel`` against a real cluster."""
import contextlib
import filecmp
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from securifile.client.errors import PathConflict, TransferCancelled
from securifile.client.plans import transfer_plan

CLI = Path(sys.executable).with_name("securifile")
DEADLINE = 10.0


class Watch:
    """What a plan's transfers and callbacks did, and whether two callbacks overlapped."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started, self.in_flight, self.most = [], 0, 0
        self.progress, self.files, self.threads = [], [], []
        self.overlapped = False
        self._in_callback = False

    def begin(self, index):
        with self.lock:
            self.started.append(index)
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)

    def end(self):
        with self.lock:
            self.in_flight -= 1

    def callback(self, record, *item):
        if self._in_callback:
            self.overlapped = True
        self._in_callback = True
        time.sleep(0.001)  # widen the window in which an overlap would be seen
        record.append(item)
        self._in_callback = False


@contextlib.contextmanager
def worker(watch, lane):
    yield
    watch.threads.append((lane, threading.current_thread().name))


def plan_of(count, size=100):
    return [(i, f"target-{i}", size) for i in range(count)]


def test_several_files_move_at_once_and_come_back_in_the_plans_order():
    watch = Watch()
    first_three = threading.Barrier(3, timeout=DEADLINE)

    def transfer(index, target, per_file, stop):
        watch.begin(index)
        try:
            if index < 3:
                first_three.wait()  # only passes with three transfers under way at once
            for done in (50, 100):
                per_file(done, 100)
            return f"result-{index}"
        finally:
            watch.end()

    results = transfer_plan(plan_of(8), transfer,
                            progress=lambda d, t: watch.callback(watch.progress, d, t),
                            on_file=lambda s, t, r: watch.callback(watch.files, s, t, r),
                            parallel=3, worker=lambda n: worker(watch, n))
    assert results == [f"result-{i}" for i in range(8)]
    assert watch.most == 3 and sorted(watch.started) == list(range(8))
    assert sorted(f[0] for f in watch.files) == list(range(8))
    done = [d for d, _ in watch.progress]
    assert done == sorted(done) and done[-1] == 800 and {t for _, t in watch.progress} == {800}
    assert not watch.overlapped
    # each worker runs in the client's context for it (its lane, then its connections closed)
    assert sorted(watch.threads) == [(0, "transfer-0"), (1, "transfer-1"), (2, "transfer-2")]


def test_one_at_a_time_stays_in_the_callers_thread():
    watch = Watch()
    caller = threading.current_thread()

    def transfer(index, target, per_file, stop):
        assert threading.current_thread() is caller
        watch.begin(index)
        watch.end()
        return index

    assert transfer_plan(plan_of(4), transfer, parallel=1) == [0, 1, 2, 3]
    assert watch.most == 1 and watch.started == [0, 1, 2, 3]


def waiting_for_stop(stop, watch):
    """A transfer that runs until it is told to stop (TransferCancelled), or the deadline."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if stop():
            watch.end()
            raise TransferCancelled("transfer cancelled")
        time.sleep(0.005)
    watch.end()
    return "not stopped"


def test_the_first_error_stops_the_plan_and_is_what_the_caller_sees():
    watch = Watch()
    three_started = threading.Event()

    def transfer(index, target, per_file, stop):
        watch.begin(index)
        if len(watch.started) == 3:
            three_started.set()
        if index == 0:
            three_started.wait(DEADLINE)
            watch.end()
            raise PathConflict(409, "parent_is_a_file", "a parent of target-0 is a file")
        return waiting_for_stop(stop, watch)

    files = []
    started = time.monotonic()
    with pytest.raises(PathConflict):
        transfer_plan(plan_of(10), transfer, on_file=lambda *f: files.append(f), parallel=3)
    assert time.monotonic() - started < DEADLINE  # the others were stopped, not waited out
    assert sorted(watch.started) == [0, 1, 2]  # nothing started after the error
    assert files == [] and watch.in_flight == 0


def test_a_cancel_from_outside_stops_every_transfer_under_way():
    watch = Watch()
    cancel = threading.Event()
    two_started = threading.Barrier(2, timeout=DEADLINE)

    def transfer(index, target, per_file, stop):
        watch.begin(index)
        two_started.wait()
        cancel.set()
        return waiting_for_stop(stop, watch)

    with pytest.raises(TransferCancelled):
        transfer_plan(plan_of(6), transfer, parallel=2, cancel=cancel)
    assert sorted(watch.started) == [0, 1] and watch.in_flight == 0


# --- the command line against a cluster ------------------------------------------------

def cli(cluster, home, *args):
    cmd = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "securifile.cli.main"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURIFILE_", "XDG_"))}
    return subprocess.run(cmd + ["--cluster", str(cluster.data_dir / "cluster.json"),
                                 "--no-progress", *map(str, args)], capture_output=True,
                          text=True, env=dict(env, HOME=str(home)), timeout=120)


def make_tree(root):
    """Files of several sizes in nested folders, one big enough to go as a resumable upload."""
    files = {"a.txt": b"alpha\n", "empty.bin": b"", "docs/b.txt": os.urandom(4096),
             "docs/deep/c.bin": os.urandom(70_000), "big.bin": os.urandom(5 * 2**20)}
    files.update({f"many/{i:02d}.bin": os.urandom(1000 + i) for i in range(12)})
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def same_trees(left, right):
    compared = filecmp.dircmp(left, right)
    assert not (compared.left_only or compared.right_only or compared.funny_files)
    match, mismatch, errors = filecmp.cmpfiles(left, right, compared.common_files, shallow=False)
    assert not mismatch and not errors
    for sub in compared.common_dirs:
        same_trees(left / sub, right / sub)


def test_cli_puts_and_gets_a_folder_several_files_at_a_time(cluster, tmp_path):
    files = make_tree(tmp_path / "tree")
    r = cli(cluster, tmp_path, "put", "--parallel", "4", tmp_path / "tree", "alice/tree/")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(files)  # a line per file, as each one ends
    r = cli(cluster, tmp_path, "put", "-P", "3", "--json", tmp_path / "tree", "alice/again/")
    origins = {record["origin"] for record in json.loads(r.stdout)}
    assert len(origins) >= 2  # the workers spread the files over the servers (else: one)
    listed = cli(cluster, tmp_path, "ls", "alice/tree")
    assert listed.returncode == 0 and all(f"alice/tree/{n}" in listed.stdout for n in files)
    r = cli(cluster, tmp_path, "get", "-P", "4", "alice/tree/", tmp_path / "back")
    assert r.returncode == 0, r.stderr
    same_trees(tmp_path / "tree", tmp_path / "back")
    r = cli(cluster, tmp_path, "rm", "-r", "-P", "4", "alice/tree/")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(files), r.stderr
    assert cli(cluster, tmp_path, "ls", "alice/tree").stdout.strip() == ""


def test_cli_folder_put_that_fails_says_why_and_exits_1(cluster, tmp_path):
    (tmp_path / "x").write_text("a file where the folder would go\n")
    assert cli(cluster, tmp_path, "put", tmp_path / "x", "alice/t2/sub").returncode == 0
    tree = tmp_path / "tree"
    for name in ("a.txt", "sub/inside.txt", "z.txt"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(name)
    r = cli(cluster, tmp_path, "put", "-P", "3", tree, "alice/t2/")
    assert r.returncode == 1 and "parent_is_a_file" in r.stderr, r.stderr


def test_parallel_takes_one_to_sixteen(cluster, tmp_path):
    for bad in ("0", "17", "many"):
        r = cli(cluster, tmp_path, "put", "--parallel", bad, tmp_path, "alice/t3/")
        assert r.returncode == 2 and "from 1 to 16" in r.stderr
