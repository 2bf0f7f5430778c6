"""``bench_ha``: how fast a dead server is noticed, how reads fail over, how fast a return is verified.

    python -m securifile.scripts.bench_ha [--files 100000] [--quick] [--json out.json]

Three measurements on real node processes over mutual TLS on loopback, with the default
heartbeat settings (1 s interval, 3 misses):

1. Detection: SIGKILL (or SIGSTOP: a hung server) a node, then poll every peer's ``/status``
   and the admin server's ``/api/v1/servers`` until each shows it down. Target: interval x
   (misses + 1).
2. Failover reads: kill the origin of a set of files and read them through the client
   library, each read a fresh client starting at a random server; some reads start before
   the cluster has noticed, the rest after. Target: no read fails.
3. Verification on return: ``--files`` unchanged small files on two nodes (written straight
   to disk while the cluster is stopped, with their location and copy records, because
   uploading 100,000 files over HTTP would take longer than the rest of the bench), then
   kill and restart one holder and time it from its start until it says running, with and
   without ``--deep``. Target: under 10 s for 100,000 files.

Every wait polls with a deadline; every loop has a bounded count.
"""
import argparse
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from securifile.client.admin import AdminClient
from securifile.client.errors import ClientError
from securifile.client.settings import ClientSettings
from securifile.client.storage import Client
from securifile.common.digests import new_hasher
from securifile.common.paths import FilePath
from securifile.nodes.challenge import stat_key
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.locationmap import Location, LocationMap, Replica

from .cluster import Cluster

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


# -- 1. detection ----------------------------------------------------------------------------

def measure_detection(cluster, views, trials, hangs=0):
    """``trials`` SIGKILLs, then ``hangs`` SIGSTOPs (a hung server), each timed until every
    peer and the database show the server down; it is then brought back and waited for."""
    cfg = cluster.cfg
    target = cfg.heartbeat_interval * (cfg.heartbeat_misses + 1)
    rows = []
    for i in range(trials + hangs):
        how = "kill" if i < trials else "stop"
        victim = cluster.names[i % len(cluster.names)]
        peers = [n for n in cluster.names if n != victim]
        started = time.monotonic()
        if how == "kill":
            cluster.kill(victim)
        else:
            cluster.signal(victim, signal.SIGSTOP)
        try:
            seen = views.watch(victim, DOWN, peers, started, timeout=30)
        finally:
            if how == "stop":
                cluster.signal(victim, signal.SIGCONT)
        rows.append({"how": how, "victim": victim, "peers": {p: seen[p] for p in peers},
                     "database": seen["database"]})
        print(f"  {how} {victim}: peers {', '.join(f'{p} {seen[p]:.2f} s' for p in peers)}; "
              f"database {seen['database']:.2f} s", flush=True)
        if how == "kill":
            cluster.restart(victim, timeout=60)
        views.settle(victim)

    def stats(kind):
        chosen = [r for r in rows if r["how"] == kind]
        return {"first_peer": summary([min(r["peers"].values()) for r in chosen]),
                "all_peers": summary([max(r["peers"].values()) for r in chosen]),
                "database": summary([r["database"] for r in chosen])}

    def met(kind, key):
        chosen = [r for r in rows if r["how"] == kind]
        return bool(chosen) and all(
            (max(r["peers"].values()) if key == "peers" else r["database"]) <= target
            for r in chosen)

    return {"target_s": target, "trials": rows, **stats("kill"), "sigstop": stats("stop"),
            "met_by_peers": met("kill", "peers"), "met_by_database": met("kill", "database"),
            "sigstop_met_by_peers": met("stop", "peers"),
            "sigstop_met_by_database": met("stop", "database")}


# -- 2. failover reads -----------------------------------------------------------------------

def upload_on(settings, server, url, files, size, rng, prefix):
    """Upload ``files`` new files through ``server`` (so it is their origin); name -> bytes."""
    client = Client([url], ca=settings.ca, cert=settings.cert, key=settings.key,
                    token=settings.token)
    contents = {}
    with client:
        for i in range(files):
            remote = f"{settings.username}/{prefix}/{i:04d}.bin"
            data = rng.randbytes(size)
            record = client.put_bytes(data, remote)
            if record.get("origin") != server:
                raise BenchError(f"{remote} landed on {record.get('origin')}, not {server}")
            contents[remote] = data
    return contents


class ReadLog:
    """Reads and their outcomes, from any number of threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reads = []  # dicts: phase, offset, latency, server, error

    def add(self, **row):
        with self._lock:
            self.reads.append(row)


def one_read(settings, remote, expected, seed, log, phase, offset, victim_url):
    """One read by a fresh client that starts at a random server, as a new user session does."""
    client = Client.from_settings(settings, rng=random.Random(seed))
    try:
        client.refresh_servers()  # the admin server's list, as of now: not part of the read
        entry = client.current_server
        buf = io.BytesIO()
        started = time.monotonic()
        info = client.download(remote, buf)
        latency = time.monotonic() - started
        error = None if buf.getvalue() == expected else "wrong bytes"
        log.add(phase=phase, offset=offset, latency=latency,
                entry_is_victim=(entry or "").rstrip("/") == victim_url.rstrip("/"),
                server=info.get("server"), error=error)
    except (ClientError, OSError) as e:
        log.add(phase=phase, offset=offset, latency=None, entry_is_victim=False, server=None,
                error=f"{type(e).__name__}: {e}")
    finally:
        client.close()


def measure_failover(cluster, views, trials, reads, size, files=20, spacing=0.25, window=5.0):
    """Kill the origin of ``files`` files; read them before, while the cluster notices, after.

    Each read is a fresh client starting at a random server (as a new user session does).
    Reads launched every ``spacing`` s from the kill through ``window`` s show how long a
    read waits for the cluster to notice; ``reads`` more go after the database shows the
    origin down, and as many before the kill as a baseline.
    """
    settings = ClientSettings.from_cluster_file(cluster.data_dir / "cluster.json")
    log = ReadLog()
    rng = random.Random(7)
    seeds = iter(range(1, 10**9))
    kills = []
    for trial in range(trials):
        victim = cluster.names[trial % len(cluster.names)]
        victim_url = cluster.url(victim)
        peers = [n for n in cluster.names if n != victim]
        contents = upload_on(settings, victim, victim_url, files, size, rng, f"failover{trial}")
        names = sorted(contents)

        def read(phase, offset=None):
            remote = rng.choice(names)
            return (settings, remote, contents[remote], next(seeds), log, phase, offset, victim_url)

        for _ in range(reads):
            one_read(*read("healthy"))
        threads = []
        seen = {}
        started = time.monotonic()
        cluster.kill(victim)
        watcher = threading.Thread(target=lambda: seen.update(
            views.watch(victim, DOWN, peers, started, timeout=30)), daemon=True)
        watcher.start()
        for k in range(int(window / spacing)):
            offset = k * spacing
            time.sleep(max(0.0, started + offset - time.monotonic()))
            t = threading.Thread(target=one_read, args=read("during", offset), daemon=True)
            t.start()
            threads.append(t)
        watcher.join(timeout=max(0.1, started + 40 - time.monotonic()))
        if set(seen) != set(peers) | {"database"}:
            raise BenchError(f"{victim} was not seen down by every peer and the database")
        for t in threads:
            t.join(timeout=max(0.1, started + 90 - time.monotonic()))
        if any(t.is_alive() for t in threads):
            raise BenchError("a read did not finish within 90 s of the kill")
        noticed = max(seen[p] for p in peers)
        kills.append({"victim": victim, "peers_s": noticed, "database_s": seen["database"]})
        for _ in range(reads):
            one_read(*read("after"))
        failed = sum(1 for r in log.reads if r["error"])
        print(f"  origin {victim} dead: peers noticed after {noticed:.2f} s, the database after "
              f"{seen['database']:.2f} s; {failed} failed reads so far", flush=True)
        cluster.restart(victim, timeout=60)
        views.settle(victim)
    ok = lambda phase: [r["latency"] for r in log.reads  # noqa: E731
                        if r["phase"] == phase and not r["error"]]
    return {
        "file_size": size, "trials": trials, "kills": kills,
        "healthy": summary(ok("healthy")),
        "after_kill": summary(ok("during")),
        "after_detection": summary(ok("after")),
        "failures": [r for r in log.reads if r["error"]],
        "failure_count": sum(1 for r in log.reads if r["error"]),
        "reads": len(log.reads),
        # Reads after the kill whose client first tried the dead origin itself.
        "entered_at_dead_origin": sum(1 for r in log.reads
                                      if r["entry_is_victim"] and r["phase"] != "healthy"),
        "after_kill_by_offset": sorted(
            [r["offset"], r["latency"]] for r in log.reads if r["phase"] == "during"
            and not r["error"]),
    }


# -- 3. verification on return ---------------------------------------------------------------

def populate(cluster, holders, count, rng, min_size=1024, max_size=4096):
    """``count`` files on every node of ``holders`` (same bytes), with location records on
    every node and copy records (with stat keys, as after an upload) on the holders.

    Run while the cluster is stopped: the location maps are the nodes' own files.
    """
    cfg = cluster.cfg
    owner = cluster.user["username"]
    origin, *replicas = holders
    stores = {n: DiskStore(cfg.node_data_dir(n)) for n in holders}
    for name in cluster.names:
        cfg.node_data_dir(name).mkdir(parents=True, exist_ok=True)
    maps = {n: LocationMap(cfg.node_data_dir(n) / "locations.sqlite3") for n in cluster.names}
    now = time.time()
    locs = []
    made_dirs = set()
    try:
        for i in range(count):
            rel = f"ha/{i // 1000:03d}/{i:06d}.bin"
            fp = FilePath(owner, rel)
            data = rng.randbytes(rng.randint(min_size, max_size))
            h = new_hasher(cfg.digest)
            h.update(data)
            loc = Location(owner, rel, origin, h.hexdigest(), cfg.digest, len(data), 1,
                           [Replica(r, p) for p, r in enumerate(replicas, start=1)], now)
            locs.append(loc)
            for store in stores.values():
                path = store.path_for(fp)
                if path.parent not in made_dirs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made_dirs.add(path.parent)
                path.write_bytes(data)
        for name, lmap in maps.items():
            with lmap.transaction():
                for loc in locs:
                    lmap.apply(loc)
                if name in stores:
                    for loc in locs:
                        path = stores[name].path_for(loc.file_path)
                        lmap.record_copy(loc.file_path, loc.version, loc.digest, loc.size,
                                         stat_key(path))
    finally:
        for lmap in maps.values():
            lmap.close()
    return sum(loc.size for loc in locs)


def log_offset(cluster, name):
    path = cluster.data_dir / "logs" / f"{name}.log"
    return path.stat().st_size if path.exists() else 0


def challenge_lines(cluster, name, offset, subject):
    """(verdict, detail, seconds) of each challenge of ``subject`` that ``name`` logged."""
    path = cluster.data_dir / "logs" / f"{name}.log"
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        m = CHALLENGE_LINE.search(line)
        if m and m.group(1) == subject:
            out.append((m.group(2), m.group(3).strip(), float(m.group(4))))
    return out


def start_node_with(cluster, name, extra):
    """Like Cluster.start_node, with extra node flags (``--deep``)."""
    return cluster._spawn(name, [sys.executable, "-m", "securifile.nodes.main", "--config",
                                 str(cluster.config_path), "--name", name, *extra])


def cpu_seconds(pid):
    """User + system CPU time of a process so far (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_of(cluster):
    return {n: cpu_seconds(cluster.procs[n].pid) for n in cluster.names if n in cluster.procs}


def wait_idle(cluster, timeout=120, window=1.0, busy=0.1):
    """Wait (bounded) until the node processes together use under ``busy`` of a CPU over a
    ``window``: work left from what came before (a catch-up pull of the location map, say)
    must not be timed as part of the next measurement. Returns the seconds waited."""
    started = time.monotonic()
    before = cpu_of(cluster)
    for _ in range(int(timeout / window) + 1):
        time.sleep(window)
        after = cpu_of(cluster)
        used = sum((after[n] or 0) - (before.get(n) or 0) for n in after)
        if used < busy * window or time.monotonic() - started > timeout:
            break
        before = after
    return time.monotonic() - started


def wait_verdict(cluster, names, timeout):
    """Poll until each of ``names`` says running, or one says failed; name -> status."""
    def settled():
        got = {n: (cluster.status(n, timeout=2.0) or {}).get("status") for n in names}
        if any(v == FAILED for v in got.values()) or all(v == RUNNING for v in got.values()):
            return got
        return None
    return wait_until(settled, timeout, f"{', '.join(names)} to pass or fail verification",
                      interval=0.05)


def timed_return(cluster, views, victim, deep, timeout):
    """Kill ``victim``, wait until its peers see it down, start it, time it until running."""
    peers = [n for n in cluster.names if n != victim]
    cluster.kill(victim)
    views.watch(victim, DOWN, peers, time.monotonic(), timeout=30)
    offsets = {p: log_offset(cluster, p) for p in peers}
    cpu_before = cpu_of(cluster)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    start_node_with(cluster, victim, ["--deep"] if deep else [])
    wait_until(lambda: cluster.status(victim, timeout=1.0), 60, f"{victim} to answer")
    answered = time.monotonic() - started
    verdict = wait_verdict(cluster, [victim], timeout)[victim]
    running = time.monotonic() - started
    cpu_after = cpu_of(cluster)
    cluster.write_json()
    challenges = {}
    for p in peers:
        found = wait_until(lambda: challenge_lines(cluster, p, offsets[p], victim), 30,
                           f"{p}'s challenge line")
        challenges[p] = {"verdict": found[-1][0], "detail": found[-1][1], "seconds": found[-1][2]}
    if verdict == RUNNING:
        views.settle(victim)
    return {"deep": deep, "verdict": verdict, "answering_s": answered, "running_s": running,
            "challenges": challenges, "load_1min": load_before,
            "cpu_s": {n: round(cpu_after[n] - (cpu_before.get(n) or 0), 2) for n in cpu_after
                      if cpu_after[n] is not None}}


def measure_verification(root, files, trials, deep_trials, timeout, quiet_wait=0):
    cluster = new_cluster(root, replicas=1)
    holders = cluster.names[:2]
    print(f"  writing {files} files on {' and '.join(holders)} (cluster stopped)", flush=True)
    t = time.monotonic()
    total = populate(cluster, holders, files, random.Random(11))
    populated = time.monotonic() - t
    print(f"  {total / 2**20:.0f} MiB per holder in {populated:.1f} s; starting the cluster", flush=True)
    t = time.monotonic()
    rows = []
    try:
        # Not Cluster.start: its wait would sit out the timeout if a node fails verification.
        if cluster.has_admin:
            cluster.start_admin()
            cluster.wait_ready(["admin"], 60)
        for name in cluster.names:
            cluster.start_node(name)
        first = wait_verdict(cluster, cluster.names, timeout)
        first_start = time.monotonic() - t
        cluster.write_json()
        print(f"  first start (the holders verify each other): {first_start:.1f} s, {first}",
              flush=True)
        if any(v != RUNNING for v in first.values()):
            raise BenchError(f"the first start did not pass verification: {first}")
        views = Views(cluster)
        victim = holders[1]
        for deep in [False] * trials + [True] * deep_trials:
            wait_for_quiet(timeout=quiet_wait)
            idle_after = wait_idle(cluster)
            row = timed_return(cluster, views, victim, deep, timeout)
            row["idle_wait_s"] = idle_after
            ch = ", ".join(f"{p}: {c['detail']} in {c['seconds']:.2f} s"
                           for p, c in row["challenges"].items())
            cpu = ", ".join(f"{n} {v:.1f} s" for n, v in row["cpu_s"].items())
            print(f"  return of {victim}{' --deep' if deep else ''}: {row['verdict']} after "
                  f"{row['running_s']:.2f} s (answering after {row['answering_s']:.2f} s; {ch}; "
                  f"CPU {cpu}; load {row['load_1min']:.1f})", flush=True)
            rows.append(row)
            if row["verdict"] != RUNNING:
                break
    finally:
        cluster.stop()
    normal = [r["running_s"] for r in rows if not r["deep"] and r["verdict"] == RUNNING]
    deep = [r["running_s"] for r in rows if r["deep"] and r["verdict"] == RUNNING]
    return {"files": files, "bytes_per_holder": total, "populate_s": populated,
            "first_start_s": first_start, "returns": rows, "normal": summary(normal),
            "deep": summary(deep), "target_s": 10.0,
            "met": bool(normal) and all(r["verdict"] == RUNNING for r in rows)
            and max(normal) < 10.0}


# -- the run ---------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(prog="bench_ha", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int,
                   help="files for the verification bench (default 100,000; 5,000 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer trials and reads (a smoke run)")
    p.add_argument("--replicas", type=int, default=1, help="replicas for detection and reads (1 or 2)")
    p.add_argument("--only", choices=("detection", "failover", "verification"), action="append",
                   help="run only these parts (repeatable)")
    p.add_argument("--data-dir", help="where the clusters live (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the data folder afterwards")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--quiet-wait", type=float, default=120,
                   help="before each measurement, wait up to this many seconds for the load "
                        "average to fall below the number of CPUs (default 120)")
    args = p.parse_args(argv)
    parts = set(args.only or ("detection", "failover", "verification"))
    # SIGTERM unwinds like Ctrl-C, so that the clusters started here are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quick = args.quick
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="securifile-bench-ha-")).resolve()
    results = {"machine": machine(), "settings": {"servers": 3, "replicas": args.replicas,
                                                  "tls": True}, "parts": {}}
    try:
        if parts & {"detection", "failover"}:
            cluster = new_cluster(root / "ha", args.replicas)
            cfg = cluster.cfg
            results["settings"].update(heartbeat_interval=cfg.heartbeat_interval,
                                       heartbeat_misses=cfg.heartbeat_misses,
                                       report_interval=cfg.report_interval,
                                       challenge_timeout=cfg.challenge_timeout)
            try:
                cluster.start(timeout=120)
                views = Views(cluster)
                if "detection" in parts:
                    print("detection (SIGKILL, default heartbeats)", flush=True)
                    load = wait_for_quiet(timeout=args.quiet_wait)
                    results["parts"]["detection"] = measure_detection(
                        cluster, views, trials=3 if quick else 6, hangs=1 if quick else 3)
                    results["parts"]["detection"]["load_1min"] = load
                if "failover" in parts:
                    print("failover reads (origin killed)", flush=True)
                    load = wait_for_quiet(timeout=args.quiet_wait)
                    results["parts"]["failover"] = measure_failover(
                        cluster, views, trials=1 if quick else 3, reads=30 if quick else 100,
                        size=256 * 1024)
                    results["parts"]["failover"]["load_1min"] = load
            finally:
                cluster.stop()
        if "verification" in parts:
            files = args.files or (5000 if quick else 100_000)
            print(f"verification of {files} files on return", flush=True)
            results["parts"]["verification"] = measure_verification(
                root / "verify", files, trials=1 if quick else 5, deep_trials=1 if quick else 2,
                timeout=600, quiet_wait=args.quiet_wait)
    except BenchError as e:
        print(f"bench_ha: {e} (data kept in {root})", file=sys.stderr)
        return 1
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    if not args.keep and not args.data_dir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def report(results):
    parts = results["parts"]
    print()
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cpus']} CPUs, "
          f"Python {results['machine']['python']}")
    if "detection" in parts:
        d = parts["detection"]
        print(f"detection after SIGKILL (target {d['target_s']:.1f} s):")
        print(f"  first peer   {fmt(d['first_peer'])}")
        print(f"  all peers    {fmt(d['all_peers'])}  -> {'met' if d['met_by_peers'] else 'MISSED'}")
        print(f"  database     {fmt(d['database'])}  -> {'met' if d['met_by_database'] else 'MISSED'}")
        if d["sigstop"]["all_peers"]["count"]:
            print(f"  SIGSTOP, all peers {fmt(d['sigstop']['all_peers'])}"
                  f"  -> {'met' if d['sigstop_met_by_peers'] else 'MISSED'}")
            print(f"  SIGSTOP, database  {fmt(d['sigstop']['database'])}"
                  f"  -> {'met' if d['sigstop_met_by_database'] else 'MISSED'}")
    if "failover" in parts:
        f = parts["failover"]
        print(f"failover reads of {f['file_size'] // 1024} KiB files (target: none fails):")
        for phase, label in (("healthy", "all servers up"),
                             ("after_kill", "started 0-5 s after the kill"),
                             ("after_detection", "after the database showed it down")):
            s = f[phase]
            if s["count"]:
                print(f"  {label:36s} p50 {s['median'] * 1000:6.0f} ms, p95 {s['p95'] * 1000:6.0f} ms,"
                      f" max {s['max'] * 1000:6.0f} ms (n={s['count']})")
        print(f"  failed reads: {f['failure_count']} of {f['reads']}"
              f"  -> {'met' if not f['failure_count'] else 'MISSED'}")
        for r in f["failures"][:5]:
            print(f"    {r['phase']} {r['error']}")
    if "verification" in parts:
        v = parts["verification"]
        print(f"verification of {v['files']} files on return (target {v['target_s']:.0f} s):")
        print(f"  digest cache {fmt(v['normal'])}  -> {'met' if v['met'] else 'MISSED'}")
        print(f"  --deep       {fmt(v['deep'])}")
        failed = [r for r in v["returns"] if r["verdict"] != RUNNING]
        if failed:
            print(f"  {len(failed)} return(s) FAILED verification: "
                  + "; ".join(c["detail"] for r in failed for c in r["challenges"].values()))


if __name__ == "__main__":
    sys.exit(main())
