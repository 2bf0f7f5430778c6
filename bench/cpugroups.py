"""CPU time of the bench and of each server under test, counted by the kernel per group.

/proc gives a process's own CPU time and, once its parent has waited for it, that of its
children. A parent that ignores SIGCHLD (vsftpd's master: one process per FTP connection and
per data connection) never waits, so those children's CPU time vanishes with them: the
server looked cheaper than it was, and its CPU was counted as "other processes" instead,
which made every vsftpd transfer look disturbed. A control group's CPU counter keeps every
task's time, also of tasks that are gone. Running as root with the cgroup v1 ``cpuacct``
controller or cgroup v2 mounted, the bench puts itself (and so curl and every server it
starts) in a group, and each server's processes in a group below it; elsewhere it falls back
to /proc.
"""
import os

from .measure import process_tree

V1 = "/sys/fs/cgroup/cpuacct"
V2 = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


class CpuGroup:
    """One control group: ``seconds()`` is the CPU time of every task that ever ran in it
    (and in the groups below it)."""

    def __init__(self, path, v2):
        self.path = path
        self.v2 = v2
        self.children = {}

    @classmethod
    def create(cls, name):
        """A new group below the root, or None where the kernel offers none to this user."""
        for root, v2 in [(V1, False)] + [(r, True) for r in V2]:
            counter = "cpu.stat" if v2 else "cpuacct.usage"
            if not os.path.exists(os.path.join(root, counter)):
                continue
            path = os.path.join(root, name)
            try:
                os.makedirs(path, exist_ok=True)
            except OSError:
                continue
            group = cls(path, v2)
            if group.seconds() is not None:
                return group
            group.remove()
        return None

    def child(self, name):
        """The group ``name`` below this one (made once)."""
        if name not in self.children:
            path = os.path.join(self.path, name)
            os.makedirs(path, exist_ok=True)
            self.children[name] = CpuGroup(path, self.v2)
        return self.children[name]

    def add(self, pids):
        """Move ``pids`` and all their descendants here; tasks they start later follow."""
        for pid in process_tree(pids):
            try:
                with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                    f.write(str(pid))
            except OSError:  # gone meanwhile, or a kernel thread
                continue

    def seconds(self):
        try:
            if self.v2:
                with open(os.path.join(self.path, "cpu.stat")) as f:
                    for line in f:
                        key, _, value = line.partition(" ")
                        if key == "usage_usec":
                            return int(value) / 1e6
                return None
            with open(os.path.join(self.path, "cpuacct.usage")) as f:
                return int(f.read()) / 1e9
        except (OSError, ValueError):
            return None

    def remove(self):
        """Hand the tasks still here back to the root group, then remove the group(s)."""
        for group in self.children.values():
            group.remove()
        root = os.path.dirname(self.path)
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                pids = [line.strip() for line in f if line.strip()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                with open(os.path.join(root, "cgroup.procs"), "w") as f:
                    f.write(pid)
            except OSError:
                continue
        try:
            os.rmdir(self.path)
        except OSError:
            pass


class BenchGroups:
    """The bench's group and one per server under test (keyed by the server's root pids)."""

    def __init__(self, group):
        self.group = group

    @classmethod
    def start(cls, name):
        group = CpuGroup.create(name)
        if group is None:
            return None
        group.add([os.getpid()])
        return cls(group)

    def for_server(self, root_pids):
        key = "server-" + "-".join(str(p) for p in sorted(root_pids))
        fresh = key not in self.group.children
        server = self.group.child(key)
        if fresh:
            server.add(root_pids)
        return server

    def close(self):
        self.group.remove()
