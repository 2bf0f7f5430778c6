"""``python -m bench.ha``: how fast a dead server is noticed, how reads fail over, how fast a return is verified.

    python -m bench.ha [--files 100000] [--quick] [--json out.json]

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
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from .detection import measure_detection
from .failover import measure_failover
from .tools import BenchError, RUNNING, Views, fmt, machine, new_cluster, wait_for_quiet
from .verification import measure_verification


# -- the run ---------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.ha", description=__doc__,
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
