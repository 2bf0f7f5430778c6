"""What the three measurements share: polling with a deadline, statistics, the status views of
every observer, and the cluster they run on."""
import json
import os
import platform
import re
import statistics
import threading
import time

from securifile.client.admin import AdminClient
from securifile.client.errors import ClientError
from securifile.launcher.cluster import Cluster

DOWN, RUNNING, FAILED = "down", "running", "failed"
POLL = 0.02  # seconds between status polls: the resolution of the detection figures
CHALLENGE_LINE = re.compile(r"peer (\S+): verifying -> (\w+) (.*)\((\d+\.\d+) s\)\s*$")


class BenchError(Exception):
    pass


# -- small tools -----------------------------------------------------------------------------

def wait_until(predicate, timeout, what, interval=POLL):
    """Poll ``predicate`` until it returns something truthy; BenchError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summary(values):
    if not values:
        return {"count": 0}
    return {"count": len(values), "median": statistics.median(values),
            "p95": percentile(values, 95), "max": max(values), "min": min(values)}


def fmt(s):
    """A summary() in seconds, as one line."""
    if not s["count"]:
        return "no samples"
    return f"median {s['median']:.2f} s, p95 {s['p95']:.2f} s, max {s['max']:.2f} s (n={s['count']})"


def wait_for_quiet(limit=None, timeout=300):
    """Wait (bounded) until the 1-minute load average is below the CPU count: other work on
    the machine shows up in every figure here. Returns the load average it settled at."""
    limit = limit or float(os.cpu_count() or 1)
    deadline = time.monotonic() + timeout
    load = os.getloadavg()[0]
    for _ in range(int(timeout) + 1):
        load = os.getloadavg()[0]
        if load < limit or time.monotonic() > deadline:
            break
        time.sleep(1)
    return load


def machine():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}


class Views:
    """What the peers and the admin server's database say about each server."""

    def __init__(self, cluster):
        self.cluster = cluster
        password = json.loads((cluster.data_dir / "credentials" / "admin.json").read_text())["password"]
        self.admin = AdminClient(cluster.cfg.admin_url, ca=str(cluster.layout.ca_cert), timeout=30.0)
        self.admin.login("admin", password)

    def database(self, subject):
        try:
            listing = self.admin.servers()
        except ClientError:
            return None
        return next((s["status"] for s in listing["servers"] if s["name"] == subject), None)

    def peer(self, observer, subject):
        status = self.cluster.status(observer, timeout=1.0)
        if status is None:
            return None
        return next((p["status"] for p in status["peers"] if p["name"] == subject), None)

    def watch(self, subject, wanted, observers, started, timeout):
        """Seconds from ``started`` until each observer, and the database, reports ``wanted``.

        One polling thread per observer, so that a slow answer from one does not blur the
        time measured for the others.
        """
        seen = {}
        deadline = started + timeout

        def poll(who):
            for _ in range(int(timeout / POLL) + 2):
                status = self.database(subject) if who == "database" else self.peer(who, subject)
                if status == wanted:
                    seen[who] = time.monotonic() - started
                    return
                if time.monotonic() > deadline:
                    return
                time.sleep(POLL)

        threads = [threading.Thread(target=poll, args=(who,), daemon=True)
                   for who in list(observers) + ["database"]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.1, deadline + 5 - time.monotonic()))
        pending = [w for w in list(observers) + ["database"] if w not in seen]
        if pending:
            raise BenchError(f"{', '.join(pending)} did not see {subject} {wanted} "
                             f"within {timeout:.0f} s")
        return seen

    def settle(self, name, timeout=60):
        """Wait until every peer and the database show ``name`` running again."""
        others = [n for n in self.cluster.names if n != name]
        self.watch(name, RUNNING, others, time.monotonic(), timeout)


def new_cluster(root, replicas, **settings):
    """A three-node cluster with the default heartbeat settings; not started."""
    return Cluster.create(root, servers=3, replicas=replicas, tls=True, base_port=0, **settings)
