"""Where our nodes spend their time: py-spy samples of every node during one transfer.

Profiling runs after the timed runs, on a pass of its own, so that sampling never slows a
figure that is reported. py-spy writes collapsed stacks ("frame;frame;frame count"); the
summary adds them up per function, inclusive and by leaf, over all nodes.
"""
import collections
import os
import time
import shutil
import signal
import subprocess
import sys

from .measure import BenchError


def find_py_spy():
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.path.exists(beside) else shutil.which("py-spy")


class NodeProfiler:
    """py-spy on each pid for the duration of a ``with`` block."""

    def __init__(self, pids, out_prefix, rate=250):
        self.py_spy = find_py_spy()
        if not self.py_spy:
            raise BenchError("py-spy not found: pip install py-spy into the project's venv")
        self.pids, self.out_prefix, self.rate = list(pids), out_prefix, rate
        self.procs = []
        self.outputs = []

    def __enter__(self):
        self.started = time.monotonic()
        os.makedirs(os.path.dirname(self.out_prefix), exist_ok=True)
        for pid in self.pids:
            out = f"{self.out_prefix}-pid{pid}.txt"
            # only samples where a thread is running: shares are of the CPU time used
            cmd = [self.py_spy, "record", "--format", "raw", "--nonblocking",
                   "--rate", str(self.rate), "--duration", "600", "-p", str(pid), "-o", out]
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
            self.outputs.append(out)
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.started
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def summary(self, top=12):
        """Shares per function, and how busy the nodes were: CPU samples over the wall time."""
        out = summarise([p for p in self.outputs if os.path.exists(p)], top)
        out["seconds"] = round(self.seconds, 2)
        out["busy_cores"] = round(out["samples"] / (self.rate * self.seconds), 2)
        return out


def _frame_name(frame):
    """'data_received (securifile/nodes/http.py:133)' -> 'nodes/http.py:data_received'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor):]
            break
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{short}:{name}"


# Frames every sample passes through; an inclusive share of theirs says nothing.
PLUMBING = ("<frozen", "asyncio/", "threading.py", "runpy", "nodes/main.py:main",
            "nodes/main.py:<module>", "nodes/main.py:serve", "tornado/ioloop.py",
            "platform/asyncio.py", "futures/thread.py", "tornado/gen.py", "concurrent/")


def summarise(paths, top=12):
    """Share of samples per function (inclusive) and per leaf (self), over all files given."""
    inclusive, leaf = collections.Counter(), collections.Counter()
    total = 0
    for path in paths:
        with open(path, errors="replace") as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                n = int(count)
                frames = [_frame_name(fr) for fr in stack.split(";") if " (" in fr]
                if not frames:
                    continue
                total += n
                leaf[frames[-1]] += n
                for name in set(frames):
                    if not name.startswith(PLUMBING):
                        inclusive[name] += n
    if not total:
        return {"samples": 0, "leaf": [], "inclusive": []}

    def share(counter):
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "leaf": share(leaf), "inclusive": share(inclusive)}
