"""``bench_ha``: how fast a dead server is noticed, how reads fail over, how fast a return is verified.

    python -m securifile.scripts.bench_ha [--files 100000] [--quick] [--json out.json]

Three measurements on real node processes over mutual TLS on loopback, with the default
heartbeat settings (1 s interval, 3 misses):

1. Detection: SIGKILL a node, then poll every peer's ``/status`` and the admin server's
   ``/api/v1/servers`` until each shows it down. Target: interval x (misses + 1).
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
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from securifile.common.adminclient import AdminClient
from securifile.common.client import Client, ClientError, ClientSettings
from securifile.common.digests import new_hasher
from securifile.common.paths import FilePath
from securifile.nodes.challenge import stat_key
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.locationmap import Location, LocationMap, Replica

from .cluster import Cluster

DOWN, RUNNING = "down", "running"
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


def fmt(values, unit="s", scale=1.0, digits=2):
    s = summary(values)
    if not s["count"]:
        return "no samples"
    f = lambda v: f"{v * scale:.{digits}f}"  # noqa: E731
    return (f"median {f(s['median'])} {unit}, p95 {f(s['p95'])} {unit}, max {f(s['max'])} {unit} "
            f"(n={s['count']})")


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
        self.admin = AdminClient(cluster.cfg.admin_url, ca=str(cluster.layout.ca_cert), timeout=5.0)
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
        """Seconds from ``started`` until each observer, and the database, reports ``wanted``."""
        seen = {}
        pending = list(observers) + ["database"]
        deadline = started + timeout
        for _ in range(int(timeout / POLL) + 2):
            for who in list(pending):
                status = self.database(subject) if who == "database" else self.peer(who, subject)
                if status == wanted:
                    seen[who] = time.monotonic() - started
                    pending.remove(who)
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(POLL)
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

def measure_detection(cluster, views, trials):
    cfg = cluster.cfg
    target = cfg.heartbeat_interval * (cfg.heartbeat_misses + 1)
    rows = []
    for i in range(trials):
        victim = cluster.names[i % len(cluster.names)]
        peers = [n for n in cluster.names if n != victim]
        started = time.monotonic()
        cluster.kill(victim)
        seen = views.watch(victim, DOWN, peers, started, timeout=30)
        rows.append({"victim": victim, "peers": {p: seen[p] for p in peers},
                     "database": seen["database"]})
        print(f"  kill {victim}: peers {', '.join(f'{p} {seen[p]:.2f} s' for p in peers)}; "
              f"database {seen['database']:.2f} s", flush=True)
        cluster.restart(victim, timeout=60)
        views.settle(victim)
    first_peer = [min(r["peers"].values()) for r in rows]
    all_peers = [max(r["peers"].values()) for r in rows]
    database = [r["database"] for r in rows]
    return {"target_s": target, "trials": rows, "first_peer": summary(first_peer),
            "all_peers": summary(all_peers), "database": summary(database),
            "met_by_peers": max(all_peers) <= target, "met_by_database": max(database) <= target}


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


def measure_failover(cluster, views, trials, reads_after, size, files=20, spacing=0.25,
                     window=5.0):
    """Kill the origin of ``files`` files; read them while the cluster notices, and after."""
    settings = ClientSettings.from_cluster_file(cluster.data_dir / "cluster.json")
    log = ReadLog()
    rng = random.Random(7)
    seed = 0
    for trial in range(trials):
        victim = cluster.names[trial % len(cluster.names)]
        peers = [n for n in cluster.names if n != victim]
        contents = upload_on(settings, victim, cluster.url(victim), files, size, rng,
                             f"failover{trial}")
        names = sorted(contents)
        threads = []
        started = time.monotonic()
        cluster.kill(victim)
        # Reads launched at fixed offsets from the kill, across the detection window.
        for k in range(int(window / spacing)):
            offset = k * spacing
            time.sleep(max(0.0, started + offset - time.monotonic()))
            remote = rng.choice(names)
            seed += 1
            t = threading.Thread(target=one_read, daemon=True,
                                 args=(settings, remote, contents[remote], seed, log, "during", offset,
                                       cluster.url(victim)))
            t.start()
            threads.append(t)
        views.watch(victim, DOWN, peers, started, timeout=30)
        for t in threads:
            t.join(timeout=60)
        if any(t.is_alive() for t in threads):
            raise BenchError("a read did not finish within 60 s")
        for _ in range(reads_after):
            remote = rng.choice(names)
            seed += 1
            one_read(settings, remote, contents[remote], seed, log, "after", None,
                     cluster.url(victim))
        print(f"  origin {victim} dead: {sum(1 for r in log.reads if r['error'])} failed reads so far",
              flush=True)
        cluster.restart(victim, timeout=60)
        views.settle(victim)
    during = [r for r in log.reads if r["phase"] == "during"]
    after = [r for r in log.reads if r["phase"] == "after"]
    ok = lambda rows: [r["latency"] for r in rows if not r["error"]]  # noqa: E731
    return {
        "file_size": size, "trials": trials,
        "during_detection": summary(ok(during)), "after_detection": summary(ok(after)),
        "failures": [r for r in log.reads if r["error"]],
        "failure_count": sum(1 for r in log.reads if r["error"]),
        "reads": len(log.reads),
        "entered_at_dead_origin": sum(1 for r in log.reads if r["entry_is_victim"]),
        "during_by_offset": [[r["offset"], r["latency"]] for r in sorted(during, key=lambda r: r["offset"])
                             if not r["error"]],
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


def timed_return(cluster, views, victim, deep, timeout):
    """Kill ``victim``, wait until its peers see it down, start it, time it until running."""
    peers = [n for n in cluster.names if n != victim]
    cluster.kill(victim)
    views.watch(victim, DOWN, peers, time.monotonic(), timeout=30)
    offsets = {p: log_offset(cluster, p) for p in peers}
    started = time.monotonic()
    start_node_with(cluster, victim, ["--deep"] if deep else [])
    answered = wait_until(lambda: cluster.status(victim, timeout=1.0), 60,
                          f"{victim} to answer") and time.monotonic() - started
    wait_until(lambda: (cluster.status(victim, timeout=2.0) or {}).get("status") == RUNNING,
               timeout, f"{victim} to pass verification", interval=0.05)
    running = time.monotonic() - started
    cluster.write_json()
    challenges = {}
    for p in peers:
        found = wait_until(lambda: challenge_lines(cluster, p, offsets[p], victim), 30,
                           f"{p}'s challenge line")
        challenges[p] = {"verdict": found[-1][0], "detail": found[-1][1], "seconds": found[-1][2]}
    views.settle(victim)
    return {"deep": deep, "answering_s": answered, "running_s": running, "challenges": challenges}


def measure_verification(root, files, trials, deep_trials, timeout, keep_cluster=None):
    cluster = new_cluster(root, replicas=1)
    holders = cluster.names[:2]
    print(f"  writing {files} files on {' and '.join(holders)} (cluster stopped)", flush=True)
    t = time.monotonic()
    total = populate(cluster, holders, files, random.Random(11))
    populated = time.monotonic() - t
    print(f"  {total / 2**20:.0f} MiB per holder in {populated:.1f} s; starting the cluster", flush=True)
    t = time.monotonic()
    cluster.start(timeout=timeout)
    first_start = time.monotonic() - t
    print(f"  first start (every holder verified by the others): {first_start:.1f} s", flush=True)
    try:
        views = Views(cluster)
        victim = holders[1]
        rows = []
        for deep in [False] * trials + [True] * deep_trials:
            row = timed_return(cluster, views, victim, deep, timeout)
            ch = ", ".join(f"{p}: {c['detail']} in {c['seconds']:.2f} s" for p, c in row["challenges"].items())
            print(f"  return of {victim}{' --deep' if deep else ''}: answering after "
                  f"{row['answering_s']:.2f} s, running after {row['running_s']:.2f} s ({ch})",
                  flush=True)
            rows.append(row)
    finally:
        if keep_cluster is None:
            cluster.stop()
    normal = [r["running_s"] for r in rows if not r["deep"]]
    deep = [r["running_s"] for r in rows if r["deep"]]
    return {"files": files, "bytes_per_holder": total, "populate_s": populated,
            "first_start_s": first_start, "returns": rows, "normal": summary(normal),
            "deep": summary(deep), "target_s": 10.0,
            "met": bool(normal) and max(normal) < 10.0}


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
    args = p.parse_args(argv)
    parts = set(args.only or ("detection", "failover", "verification"))
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
            cluster.start(timeout=120)
            try:
                views = Views(cluster)
                if "detection" in parts:
                    print("detection (SIGKILL, default heartbeats)", flush=True)
                    results["parts"]["detection"] = measure_detection(cluster, views, 3 if quick else 6)
                if "failover" in parts:
                    print("failover reads (origin killed)", flush=True)
                    results["parts"]["failover"] = measure_failover(
                        cluster, views, trials=1 if quick else 3, reads_after=30 if quick else 200,
                        size=256 * 1024)
            finally:
                cluster.stop()
        if "verification" in parts:
            files = args.files or (5000 if quick else 100_000)
            print(f"verification of {files} files on return", flush=True)
            results["parts"]["verification"] = measure_verification(
                root / "verify", files, trials=1 if quick else 3, deep_trials=1 if quick else 2,
                timeout=600)
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
        print(f"detection (target {d['target_s']:.1f} s):")
        print(f"  first peer   {fmt([r and min(r['peers'].values()) for r in d['trials']])}")
        print(f"  all peers    {fmt([max(r['peers'].values()) for r in d['trials']])}"
              f"  -> {'met' if d['met_by_peers'] else 'MISSED'}")
        print(f"  database     {fmt([r['database'] for r in d['trials']])}"
              f"  -> {'met' if d['met_by_database'] else 'MISSED'}")
    if "failover" in parts:
        f = parts["failover"]
        for phase in ("during_detection", "after_detection"):
            s = f[phase]
            if s["count"]:
                print(f"failover reads {phase.replace('_', ' ')}: p50 {s['median'] * 1000:.0f} ms, "
                      f"p95 {s['p95'] * 1000:.0f} ms, max {s['max'] * 1000:.0f} ms (n={s['count']})")
        print(f"  failed reads: {f['failure_count']} of {f['reads']}"
              f"  -> {'met' if not f['failure_count'] else 'MISSED'}")
        for r in f["failures"][:5]:
            print(f"    {r['phase']} {r['error']}")
    if "verification" in parts:
        v = parts["verification"]
        print(f"verification of {v['files']} files on return (target {v['target_s']:.0f} s):")
        print(f"  digest cache {fmt([r['running_s'] for r in v['returns'] if not r['deep']])}"
              f"  -> {'met' if v['met'] else 'MISSED'}")
        print(f"  --deep       {fmt([r['running_s'] for r in v['returns'] if r['deep']])}")


if __name__ == "__main__":
    sys.exit(main())
