"""The bench counts CPU of processes that vanish unreaped (vsftpd's per-connection ones)."""
import os
import subprocess
import sys
import time

import pytest

from bench.cpugroups import CpuGroup
from bench.measure import CLOCK_TICKS, _tree_jiffies

# A parent that ignores SIGCHLD, as vsftpd's master does, forks a child that burns CPU and
# exits: the kernel reaps it at once and adds its time to nobody.
PARENT = """
import os, signal, sys, time
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
sys.stdin.readline()
child = os.fork()
if child == 0:
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    os._exit(0)
for _ in range(600):  # bounded (30 s): until the kernel has reaped the child
    if not os.path.exists(f"/proc/{child}"):
        break
    time.sleep(0.05)
print("done", flush=True)
sys.stdin.readline()
"""


def test_a_group_keeps_the_cpu_of_children_nobody_reaped():
    group = CpuGroup.create(f"securifile-test-{os.getpid()}")
    if group is None:
        pytest.skip("needs root and a cgroup CPU controller (the bench then falls back to /proc)")
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        group.add([parent.pid])
        before_group, before_proc = group.seconds(), _tree_jiffies(parent.pid) / CLOCK_TICKS
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "done"
        spent_group = group.seconds() - before_group
        spent_proc = _tree_jiffies(parent.pid) / CLOCK_TICKS - before_proc
        assert spent_group >= 0.35, spent_group  # the child's 0.4 s, counted
        assert spent_proc < 0.2, spent_proc  # what /proc alone sees: the child is lost
    finally:
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        group.remove()
        while os.path.exists(group.path) and time.monotonic() < deadline:
            time.sleep(0.05)
            group.remove()
    assert not os.path.exists(group.path)
