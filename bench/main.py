"""scripts/bench: SecuriFile against nginx and vsftpd over TLS on loopback, measured with curl.

Run ``scripts/bench --help``. Results go to ``bench-results/`` (one JSON file per run and a
merged ``latest.json``); ``--write-doc`` regenerates the figures in docs/PERFORMANCE.md.
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import time

from . import report
from .cluster import SecuriFileCluster
from .concurrent import concurrent_big, concurrent_small
from .cpugroups import BenchGroups
from .folders import folder_transfers, parallel_settings
from .machine import check_disk, machine_info
from .measure import (MIB, BenchError, ForeignCpu, PeakMemorySampler, download,
                           download_digest, format_size, make_random_file, median, parse_size,
                           upload, upload_many, wait_for_quiet)
from .profiler import NodeProfiler
from .refs import (NginxReference, VsftpdReference, ensure_reference_packages,
                        find_reference_binaries, make_throwaway_ca, versions)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SELECTIONS = {
    "refs": {"nginx", "vsftpd"}, "ours": {"r0", "r2"},
    "nginx": {"nginx"}, "vsftpd": {"vsftpd"}, "r0": {"r0"}, "r2": {"r2"},
}


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", default="refs,ours",
                        help="comma list of: refs, ours, nginx, vsftpd, r0, r2")
    parser.add_argument("--size", default="1G", help="big file size (K/M/G are binary)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median taken)")
    parser.add_argument("--small-count", type=int, default=200)
    parser.add_argument("--small-size", default="4K")
    parser.add_argument("--move-size", default="2G",
                        help="file moved (up, down) while our nodes' peak RSS is watched; 0: skip")
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--launcher", default=None,
                        help="the `securifile` command (default: beside this Python, then PATH)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--results-dir", default=os.path.join(REPO, "bench-results"))
    parser.add_argument("--write-doc", action="store_true",
                        help="regenerate the figures in docs/PERFORMANCE.md from the merged results")
    parser.add_argument("--doc", default=os.path.join(REPO, "docs", "PERFORMANCE.md"))
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: print (and with --write-doc, write) bench-results/latest.json")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install missing reference servers")
    parser.add_argument("--max-foreign-cpu", type=float, default=0.3,
                        help="cores other processes may use during a transfer before it is retaken")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a transfer disturbed by other processes is taken again")
    parser.add_argument("--quiet-wait", type=float, default=30,
                        help="seconds to wait for other processes to calm down before a transfer")
    parser.add_argument("--patience", type=float, default=1800,
                        help="seconds after which the bench stops waiting and retaking, and "
                             "keeps what it gets")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the bench, the servers under test and curl at this niceness "
                             "(e.g. -5 as root) so that other work on a shared machine disturbs "
                             "the figures less; every system gets the same")
    parser.add_argument("--profile", action="store_true",
                        help="after the timed runs, sample our nodes with py-spy during one more "
                             "upload, download and small-file batch (raw stacks in bench-results/)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the untimed download that checks the big file's SHA-256")
    parser.add_argument("--clients", type=int, default=16,
                        help="concurrent clients (curl processes, each a session of its own) "
                             "for the concurrent figures; 0: skip them")
    parser.add_argument("--concurrent-files", type=int, default=100,
                        help="--small-size uploads per concurrent client")
    parser.add_argument("--concurrent-size", default="64M",
                        help="one upload of this size per concurrent client; 0: skip")
    parser.add_argument("--folder-parallel", default="1,4", type=parallel_settings,
                        help="our CLI's folder put and get at these --parallel settings")
    parser.add_argument("--concurrent-only", action="store_true",
                        help="measure only the concurrent figures (no single-client transfers, "
                             "no big file, no memory check), e.g. --only vsftpd,r2 --concurrent-only")
    args = parser.parse_args(argv)
    chosen = set()
    for word in filter(None, args.only.split(",")):
        if word not in SELECTIONS:
            parser.error(f"--only: unknown {word!r}; choose from {', '.join(SELECTIONS)}")
        chosen |= SELECTIONS[word]
    args.chosen = chosen
    args.size_bytes = parse_size(args.size)
    args.small_bytes = parse_size(args.small_size)
    args.move_bytes = 0 if args.concurrent_only else parse_size(args.move_size)
    args.concurrent_bytes = parse_size(args.concurrent_size)
    if args.runs < 1 or args.small_count < 2 or args.size_bytes < 1:
        parser.error("--runs >= 1, --small-count >= 2 and a positive --size are needed")
    if args.clients < 0 or args.clients > 64 or (args.clients and args.concurrent_files < 2):
        parser.error("--clients 0..64, and --concurrent-files >= 2 with clients")
    if args.concurrent_only and not args.clients:
        parser.error("--concurrent-only needs --clients > 0")
    return args


def find_launcher(explicit):
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "securifile")
    return beside if os.path.exists(beside) else shutil.which("securifile")


def transfer_timeout(size):
    """Generous but bounded: no curl runs longer than this (10 MB/s floor, 2 minutes minimum)."""
    return max(120, size // 10_000_000)


class Files:
    """The random files the transfers use, made once per bench run (the big one only when
    single-client transfers are measured)."""

    def __init__(self, workdir, size, small_count, small_size, big=True):
        self.workdir = workdir
        self.big, self.big_size, self.big_sha256 = None, size, None
        if big:
            self.big = os.path.join(workdir, "big.bin")
            log(f"making a {format_size(size)} random file")
            self.big_sha256 = make_random_file(self.big, size)
        self.small_size = small_size
        self.small = self.small_files(small_count)
        self.move = None

    def small_files(self, count):
        """``count`` random files of the small size (made once, shared by every use)."""
        os.makedirs(os.path.join(self.workdir, "small"), exist_ok=True)
        paths = [os.path.join(self.workdir, "small", f"{i:04d}.bin") for i in range(count)]
        for path in paths:
            if not os.path.exists(path):
                make_random_file(path, self.small_size)
        return paths

    def move_file(self, size):
        if self.move is None or self.move[1] != size:
            path = os.path.join(self.workdir, "move.bin")
            log(f"making a {format_size(size)} random file for the memory check")
            self.move = (path, size, make_random_file(path, size))
        return self.move

    def concurrent_file(self, size):
        """The file each concurrent client uploads once (all read the same cached copy)."""
        path = os.path.join(self.workdir, "concurrent.bin")
        if not os.path.exists(path):
            log(f"making a {format_size(size)} random file for the concurrent uploads")
            make_random_file(path, size)
        return path

    def drop_move_file(self):
        if self.move:
            os.remove(self.move[0])
            self.move = None


def settle():
    """Start each timed transfer with no dirty pages left writing back from the one before.

    Without this the first upload competes with the writeback of the freshly made source
    file, and each system pays for the previous one's writes.
    """
    os.sync()


PRIORITY = {"nice": 0}  # set once in main() from --nice


def watch_memory(target):
    """Peak RSS of the server's processes; with --nice, also gives each new one the priority.

    vsftpd starts every FTP session in a session (and so a scheduler autogroup) of its own,
    which would otherwise run at normal priority while nginx and our nodes do not.
    """
    nice = PRIORITY["nice"]
    return PeakMemorySampler(target.root_pids + target.side_pids, labels=target.labels,
                             headline=target.root_pids, interval_s=0.1 if nice else 0.2,
                             on_new_process=(lambda pid: set_priority(pid, nice)) if nice else None)


def undisturbed(label, transfer, args, before=None, target=None):
    """Run ``transfer()`` when the machine is quiet; take it again if others got busy meanwhile.

    The machine is shared: a transfer during which processes outside the bench kept more
    than ``--max-foreign-cpu`` cores busy is taken again (at most ``--retries`` times).
    ``before`` undoes what a disturbed attempt left (an uploaded file) before the next one.
    """
    for attempt in range(args.retries + 1):
        if attempt and before:
            before()
        patient = time.monotonic() < args.patient_until
        wait_for_quiet(args.max_foreign_cpu, args.quiet_wait if patient else 0, log,
                       args.cpu_groups)
        settle()
        with ForeignCpu(server_pids=target.root_pids if target else (),
                        groups=args.cpu_groups) as foreign:
            result = transfer()
        result["server_cpu_s"] = round(foreign.server_cpu_s, 2)
        result["foreign_cores"] = round(foreign.cores, 2)
        result["waiting_cores"] = round(foreign.waiting_cores, 2)
        result["attempts"] = attempt + 1
        if foreign.cores <= args.max_foreign_cpu:
            return result
        again = attempt < args.retries and time.monotonic() < args.patient_until
        log(f"{label}: others used {foreign.cores:.2f} cores"
            + ("; taking it again" if again else "; keeping it, marked"))
        if not again:
            return result
    return result


def measure_system(server, target, files, args):
    """Big upload, download and small uploads, ``args.runs`` times, watching peak memory."""
    runs = []
    with watch_memory(target) as memory:
        for run in range(args.runs):
            figures = one_run(server, target, files, run, args,
                              verify=run == 0 and not args.no_verify)
            log(f"{target.name} run {run + 1}/{args.runs}: "
                f"up {figures['upload']['mb_per_s']:.0f} MB/s, "
                f"down {figures['download']['mb_per_s']:.0f} MB/s, "
                f"{figures['small']['files_per_s']:.0f} small files/s"
                + (f", {figures['small']['peer_handshakes_per_upload']:.3f} peer handshakes "
                   "per small upload" if "peer_handshakes_per_upload" in figures["small"] else ""))
            runs.append(figures)
    rss = memory.result()
    every = [r[kind] for r in runs for kind in ("upload", "download", "small")]
    return {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "upload_mb_s": median([r["upload"]["mb_per_s"] for r in runs]),
        "download_mb_s": median([r["download"]["mb_per_s"] for r in runs]),
        "small_per_s": median([r["small"]["files_per_s"] for r in runs]),
        "small_per_s_all": median([r["small"]["files_per_s_all"] for r in runs]),
        "small_first_file_ms": median([r["small"]["first_file_ms"] for r in runs]),
        "peak_rss_mib": rss["max_process_mib"],
        "total_rss_mib": rss["max_total_mib"],
        "rss": rss,
        "runs": runs,
        "foreign_cores_max": max(t["foreign_cores"] for t in every),
        "waiting_cores_max": max(t["waiting_cores"] for t in every),
        "niceness": PRIORITY["nice"],
        # CPU seconds the server's processes spent per GiB moved and per small file
        "server_cpu_s_per_gib_up": median([r["upload"]["server_cpu_s"] for r in runs])
        * MIB * 1024 / files.big_size,
        "server_cpu_s_per_gib_down": median([r["download"]["server_cpu_s"] for r in runs])
        * MIB * 1024 / files.big_size,
        "server_cpu_ms_per_small_file": median([r["small"]["server_cpu_s"] for r in runs])
        * 1000 / len(files.small),
        "retaken": sum(t["attempts"] - 1 for t in every),
        # new TLS connections between nodes per small upload (issue 10: below 0.05)
        "peer_handshakes_per_small_upload": median(
            [r["small"]["peer_handshakes_per_upload"] for r in runs])
        if all("peer_handshakes_per_upload" in r["small"] for r in runs) else None,
        "verified_sha256": not args.no_verify,
        "redirects_on_download": max(r["download"].get("redirects", 0) for r in runs),
    }


def one_run(server, target, files, run, args, verify):
    timeout = transfer_timeout(files.big_size)
    remote = f"big-{run}.bin"
    up = undisturbed(f"{target.name} upload", lambda: upload(
        target, files.big, remote, files.big_size, timeout), args,
        before=lambda: server.delete(remote), target=target)
    down = undisturbed(f"{target.name} download", lambda: download(
        target, remote, files.big_size, timeout), args, target=target)
    if verify and download_digest(target, remote, timeout) != files.big_sha256:
        raise BenchError(f"{target.name}: the downloaded file differs from the upload")
    server.delete(remote)
    # New TLS connections between nodes during the small batch (steady state): ours only.
    count = getattr(server, "peer_connections", lambda: None)
    before = count()
    # a fresh folder per attempt: a retaken batch must not overwrite the files of the one before
    small = undisturbed(f"{target.name} small files", lambda: upload_many(
        target, files.small, f"small/run{run}-{time.monotonic_ns()}", timeout), args,
        target=target)
    after = count()
    if before is not None and after is not None:
        small["peer_handshakes_per_upload"] = (after - before) / len(files.small)
    return {"upload": up, "download": down, "small": small}


def measure_move(server, target, files, size, args):
    """Peak RSS of every node while a file of ``size`` goes up and comes back down."""
    path, size, sha256 = files.move_file(size)
    timeout = transfer_timeout(size)
    with watch_memory(target) as memory:
        up = undisturbed(f"{target.name} {format_size(size)} upload", lambda: upload(
            target, path, "move.bin", size, timeout), args,
            before=lambda: server.delete("move.bin"))
        down = undisturbed(f"{target.name} {format_size(size)} download", lambda: download(
            target, "move.bin", size, timeout), args)
    server.delete("move.bin")
    rss = memory.result()
    log(f"{target.name} moving {format_size(size)}: peak RSS {rss['max_process_mib']} MiB")
    return {"size": size, "upload_mb_s": up["mb_per_s"], "download_mb_s": down["mb_per_s"],
            "peak_rss_mib": rss["max_process_mib"], "rss": rss}


def measure_concurrent(server, target, files, args):
    """``args.clients`` clients at once: small uploads, then one big upload each, ``args.runs``
    times (medians), with the servers' CPU per upload and their peak memory."""
    targets = (server.client_targets(args.clients) if hasattr(server, "client_targets")
               else [target] * args.clients)
    scratch = os.path.join(files.workdir, "clients")
    small_paths = files.small_files(args.concurrent_files)
    small_timeout = transfer_timeout(args.clients * args.concurrent_files * 1_000_000)
    runs = []
    with watch_memory(target) as memory:
        for run in range(args.runs):
            label = f"{target.name} {args.clients} clients"
            small = undisturbed(f"{label} x {len(small_paths)} small files", lambda: concurrent_small(
                targets, small_paths, f"conc/run{run}-{time.monotonic_ns()}", small_timeout,
                scratch), args, target=target)
            small["server_cpu_ms_per_upload"] = small["server_cpu_s"] * 1000 / small["uploads"]
            figures = {"small": small}
            log(f"{label}: {small['files_per_s']:.0f} small files/s, p50 {small['p50_ms']:.1f} "
                f"ms, p99 {small['p99_ms']:.1f} ms, "
                f"{small['server_cpu_ms_per_upload']:.2f} ms server CPU each")
            if args.concurrent_bytes:
                figures["big"] = concurrent_big_run(server, targets, files, args, label, scratch)
            runs.append(figures)
    small = [r["small"] for r in runs]
    big = [r["big"] for r in runs if "big" in r]
    result = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "clients": args.clients,
        "files_per_client": len(small_paths),
        "small_size": files.small_size,
        "small_per_s": median([s["files_per_s"] for s in small]),
        "small_p50_ms": median([s["p50_ms"] for s in small]),
        "small_p99_ms": median([s["p99_ms"] for s in small]),
        "small_cpu_ms_per_upload": median([s["server_cpu_ms_per_upload"] for s in small]),
        "peak_rss_mib": memory.result()["max_process_mib"],
        "runs": runs,
    }
    if big:
        result.update(
            big_size=args.concurrent_bytes,
            big_mb_s=median([b["mb_per_s"] for b in big]),
            big_p50_s=median([b["p50_s"] for b in big]),
            big_cpu_s_per_upload=median([b["server_cpu_s_per_upload"] for b in big]),
        )
    return result


def concurrent_big_run(server, targets, files, args, label, scratch):
    """Each client uploads one ``--concurrent-size`` file at once; the files are deleted after."""
    size = args.concurrent_bytes
    path = files.concurrent_file(size)
    remotes = []

    def transfer():
        remotes[:] = [f"conc/big-{time.monotonic_ns()}-c{i:02d}.bin" for i in range(len(targets))]
        return concurrent_big(targets, path, size, remotes, transfer_timeout(size * len(targets)),
                              scratch)

    def delete_all():
        for remote in remotes:
            server.delete(remote)

    big = undisturbed(f"{label} x {format_size(size)}", transfer, args, before=delete_all,
                      target=targets[0])
    delete_all()
    big["server_cpu_s_per_upload"] = big["server_cpu_s"] / big["uploads"]
    log(f"{label}: {format_size(size)} each, {big['mb_per_s']:.0f} MB/s together, p50 "
        f"{big['p50_s']:.2f} s, {big['server_cpu_s_per_upload']:.2f} s server CPU each")
    return big


def profile_pass(cluster, target, files, out_dir, args):
    """One untimed pass with py-spy on every node: where does each kind of transfer go?"""
    timeout = transfer_timeout(files.big_size)
    tag = cluster.name.replace(" ", "-").replace("=", "")
    phases = (
        ("upload", lambda: upload(target, files.big, "profiled.bin", files.big_size, timeout)),
        ("download", lambda: download(target, "profiled.bin", files.big_size, timeout)),
        ("small uploads", lambda: upload_many(target, files.small, "small/profiled", timeout)),
    )
    summaries = {}
    for phase, transfer in phases:
        wait_for_quiet(args.max_foreign_cpu, args.quiet_wait, log, args.cpu_groups)
        settle()
        prefix = os.path.join(out_dir, f"{tag}-{phase.replace(' ', '-')}")
        with NodeProfiler(cluster.node_pids(), prefix) as profiler:
            transfer()
        summaries[phase] = profiler.summary()
        summaries[phase]["files"] = profiler.outputs
        log(f"{cluster.name} profiled {phase}: top leaves "
            + ", ".join(f"{n} {p}%" for n, p in summaries[phase]["leaf"][:5]))
    cluster.delete("profiled.bin")
    return summaries


def run_references(args, files, workdir, results):
    if args.no_install:
        nginx, vsftpd = find_reference_binaries()
        if not nginx or not vsftpd:
            raise BenchError("nginx or vsftpd missing (and --no-install given)")
    else:
        nginx, vsftpd = ensure_reference_packages(log)
    results["machine"].update(versions(nginx, vsftpd))
    tls = make_throwaway_ca(os.path.join(workdir, "tls"))
    for cls, binary in ((NginxReference, nginx), (VsftpdReference, vsftpd)):
        if cls.name not in args.chosen:
            continue
        server = cls(binary, os.path.join(workdir, cls.name), tls)
        log(f"starting {cls.name}")
        target = server.start()
        try:
            figures = {} if args.concurrent_only else measure_system(server, target, files, args)
            if args.clients:
                figures["concurrent"] = measure_concurrent(server, target, files, args)
            results["systems"][cls.name] = figures
        finally:
            server.stop()
            shutil.rmtree(server.prefix, ignore_errors=True)


def run_ours(args, files, workdir, results):
    launcher = find_launcher(args.launcher)
    if not launcher:
        raise BenchError("no `securifile` command found (install the project, or --launcher)")
    for replicas in (0, 2):
        if f"r{replicas}" not in args.chosen:
            continue
        cluster = SecuriFileCluster(launcher, os.path.join(workdir, f"cluster-r{replicas}"),
                                    servers=args.servers, replicas=replicas)
        log(f"starting {cluster.name} with {args.servers} servers")
        target = cluster.start()
        if args.nice:  # the launcher runs in a session of its own: a group of its own
            set_priority(cluster.proc.pid, args.nice)
            for pid in target.root_pids + target.side_pids:
                set_priority(pid, args.nice)
        try:
            figures = {} if args.concurrent_only else measure_system(cluster, target, files, args)
            # The big file's move before the concurrent clients: 16 big uploads at once leave
            # the nodes' heaps larger (glibc keeps what it was given), which would then be
            # the starting point of this peak; the concurrent table has a peak of its own.
            if args.folder_parallel and not args.concurrent_only:
                figures["folder"] = folder_transfers(
                    launcher, cluster, files.small, args.folder_parallel, os.path.join(
                        workdir, "folder-scratch"), transfer_timeout(len(files.small) << 20), log)
            if args.move_bytes:
                figures["move"] = measure_move(cluster, target, files, args.move_bytes, args)
            if args.clients:
                figures["concurrent"] = measure_concurrent(cluster, target, files, args)
            if replicas == 0 and not args.concurrent_only:
                figures["download_unverified_mb_s"] = measure_unverified_download(
                    launcher, files, workdir, args)
            if args.profile and not args.concurrent_only:
                figures["profile"] = profile_pass(cluster, target, files, os.path.join(
                    args.results_dir, "profiles", args.stamp), args)
            results["systems"][cluster.name] = figures
        finally:
            cluster.stop()
            if not args.keep:
                shutil.rmtree(cluster.data_dir, ignore_errors=True)
    files.drop_move_file()


def measure_unverified_download(launcher, files, workdir, args):
    """Downloads (MB/s, median) from a cluster whose nodes do not check the digest of what they
    send (``verify_reads = false``): what the check costs, against the default above."""
    cluster = SecuriFileCluster(launcher, os.path.join(workdir, "cluster-unverified"),
                                servers=args.servers, replicas=0,
                                env={"SECURIFILE_VERIFY_READS": "false"})
    log(f"starting {cluster.name} with {args.servers} servers, reads not verified")
    target = cluster.start()
    try:
        if args.nice:
            for pid in [cluster.proc.pid] + target.root_pids + target.side_pids:
                set_priority(pid, args.nice)
        timeout = transfer_timeout(files.big_size)
        upload(target, files.big, "unverified.bin", files.big_size, timeout)
        rates = []
        for run in range(args.runs):
            down = undisturbed(f"{target.name} download, reads not verified", lambda: download(
                target, "unverified.bin", files.big_size, timeout), args, target=target)
            rates.append(down["mb_per_s"])
            log(f"{target.name} unverified download {run + 1}/{args.runs}: "
                f"{down['mb_per_s']:.0f} MB/s")
        return median(rates)
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(cluster.data_dir, ignore_errors=True)


def set_priority(pid, nice):
    """Niceness for a process and its autogroup (with autogroups, nice alone only ranks the
    processes of one session against each other, not against other sessions' work)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
    except ProcessLookupError:
        pass
    except OSError as exc:
        log(f"could not set priority {nice} for {pid}: {exc}")


def autogroup_nice(pid):
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    # SIGTERM takes the same way out as Ctrl-C, so servers the bench started are stopped
    signal.signal(signal.SIGTERM, _interrupt)
    # the autogroup is the whole session's (the shell that started the bench too): put it back
    group_nice_before = autogroup_nice(os.getpid())
    if args.nice:
        PRIORITY["nice"] = args.nice
        set_priority(os.getpid(), args.nice)
    args.stamp = time.strftime("%Y%m%d-%H%M%S")
    args.patient_until = time.monotonic() + args.patience
    args.cpu_groups = None
    if args.report_only:
        with open(os.path.join(args.results_dir, "latest.json")) as f:
            merged = json.load(f)
        report.print_report(merged, print)
        if args.write_doc:
            report.write_doc(args.doc, merged)
        return 0
    workdir = args.workdir or tempfile.mkdtemp(prefix="securifile-bench-")
    os.makedirs(workdir, exist_ok=True)
    results = {
        "machine": machine_info(),
        "settings": {"size": args.size_bytes, "runs": args.runs, "small_count": args.small_count,
                     "small_size": args.small_bytes},
        "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        "systems": {},
    }
    failed = None
    # CPU counted by the kernel per group where it can (bench/cpugroups.py says why)
    args.cpu_groups = BenchGroups.start(f"securifile-bench-{os.getpid()}")
    results["cpu_accounting"] = "cgroup" if args.cpu_groups else "proc"
    try:
        check_disk(workdir, args)
        files = Files(workdir, args.size_bytes, args.small_count, args.small_bytes,
                      big=not args.concurrent_only)
        if args.chosen & {"nginx", "vsftpd"}:
            run_references(args, files, workdir, results)
        if args.chosen & {"r0", "r2"}:
            run_ours(args, files, workdir, results)
    except BenchError as exc:
        failed = exc
        log(f"FAILED: {exc}")
    except KeyboardInterrupt:
        failed = "interrupted"
        log("interrupted")
    finally:
        if args.cpu_groups is not None:
            args.cpu_groups.close()
        if args.nice and group_nice_before is not None:
            set_priority(os.getpid(), group_nice_before)
        if args.keep:
            log(f"scratch kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not results["systems"]:
        return 1
    os.makedirs(args.results_dir, exist_ok=True)
    stamp = args.stamp
    with open(os.path.join(args.results_dir, f"{stamp}.json"), "w") as f:
        json.dump(results, f, indent=2)
    latest = os.path.join(args.results_dir, "latest.json")
    merged = report.merge_results(latest, results)
    with open(latest, "w") as f:
        json.dump(merged, f, indent=2)
    report.print_report(merged, print)
    log(f"results in {args.results_dir}/{stamp}.json (merged view: latest.json)")
    if args.write_doc and not failed:
        report.write_doc(args.doc, merged)
        log(f"figures written to {args.doc}")
    return 1 if failed else 0
