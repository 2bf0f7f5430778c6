"""3. Verification on return: how long a returning node with many files takes to be verified
(digest cache, and ``--deep``)."""
import os
import random
import sys
import time

from securifile.common.digests import new_hasher
from securifile.common.paths import FilePath
from securifile.launcher.cluster import NODE_ENV
from securifile.nodes.challenge import stat_key
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.locationmap import Location, LocationMap, Replica

from .tools import (BenchError, CHALLENGE_LINE, DOWN, FAILED, RUNNING, Views, new_cluster, summary,
                    wait_for_quiet, wait_until)


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
                                 str(cluster.config_path), "--name", name, *extra], NODE_ENV)


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
