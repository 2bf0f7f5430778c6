"""Many clients at once: ``clients`` curl processes started together against one system.

Each client is one curl process with a session of its own, as that many users of the
service would have: over HTTPS one keep-alive connection (one TLS handshake) for all its
uploads, over FTPS one control connection (one login, one vsftpd session process) and a
new TLS data connection per file. The aggregate rate is every upload over the wall time
from the first client's start to the last one's end. Latencies are curl's own time per
transfer; as in the single-client figures, each client's first transfer (which carries its
TLS handshake, and for FTPS the login) is kept apart from the percentiles.
"""
import math
import os
import subprocess
import time

from .measure import (BenchError, check_transfers, curl_command, parse_write_out,
                           upload_codes, upload_config)


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def run_clients(jobs, timeout_s, scratch):
    """Start one curl per job ``(target, config lines)`` at once and wait for all of them.

    Returns each client's transfers (curl's write-out lines) and the wall time. Configs and
    outputs go through files in ``scratch``, so no pipe fills up while the others run. Every
    curl has ``--max-time``; past the deadline the remaining ones are killed.
    """
    os.makedirs(scratch, exist_ok=True)
    procs = []
    try:
        for i, (target, lines) in enumerate(jobs):
            config = os.path.join(scratch, f"client{i:02d}.curl")
            with open(config, "w") as f:
                f.write("\n".join(lines) + "\n")
        started = time.monotonic()
        for i, (target, _lines) in enumerate(jobs):
            out = open(os.path.join(scratch, f"client{i:02d}.out"), "w+")
            err = open(os.path.join(scratch, f"client{i:02d}.err"), "w+")
            cmd = curl_command(target, timeout_s, os.path.join(scratch, f"client{i:02d}.curl"))
            procs.append((subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=err), out, err, target))
        deadline = started + timeout_s + 30
        for proc, *_ in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError(f"{len(jobs)} concurrent clients not done after "
                                 f"{timeout_s + 30}s") from None
        wall = time.monotonic() - started
        results = []
        for proc, out, err, target in procs:
            out.seek(0)
            err.seek(0)
            if proc.returncode != 0:
                raise BenchError(f"a concurrent curl against {target.name} failed "
                                 f"({proc.returncode}): {err.read().strip()[:500]}")
            results.append(parse_write_out(out.read()))
        return results, wall
    finally:
        for proc, out, err, _target in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            out.close()
            err.close()


def concurrent_small(targets, local_paths, remote_prefix, timeout_s, scratch):
    """Each client uploads every file of ``local_paths`` under a folder of its own."""
    jobs = [(target, upload_config(target, [
        (path, f"{remote_prefix}/c{i:02d}/{j:04d}.bin") for j, path in enumerate(local_paths)]))
        for i, target in enumerate(targets)]
    per_client, wall = run_clients(jobs, timeout_s, scratch)
    for target, transfers in zip(targets, per_client):
        check_transfers(target, transfers, len(local_paths), upload_codes(target))
    steady = [t["time_total"] * 1000 for transfers in per_client for t in transfers[1:]]
    firsts = [transfers[0]["time_total"] * 1000 for transfers in per_client]
    uploads = sum(len(transfers) for transfers in per_client)
    return {
        "clients": len(targets), "uploads": uploads, "wall_s": round(wall, 3),
        "files_per_s": uploads / wall,
        "p50_ms": percentile(steady, 50) if steady else None,
        "p99_ms": percentile(steady, 99) if steady else None,
        "max_ms": max(steady) if steady else None,
        "first_file_ms_p50": percentile(firsts, 50), "first_file_ms_max": max(firsts),
        "connections": sum(t["num_connects"] for tr in per_client for t in tr),
    }


def concurrent_big(targets, local_path, size, remotes, timeout_s, scratch):
    """Each client uploads ``local_path`` once, to its name in ``remotes``."""
    jobs = [(target, upload_config(target, [(local_path, remote)]))
            for target, remote in zip(targets, remotes)]
    per_client, wall = run_clients(jobs, timeout_s, scratch)
    for target, transfers in zip(targets, per_client):
        check_transfers(target, transfers, 1, upload_codes(target))
        if transfers[0]["size_upload"] != size:
            raise BenchError(f"{target.name}: uploaded {transfers[0]['size_upload']} of {size} bytes")
    seconds = [transfers[0]["time_total"] for transfers in per_client]
    return {
        "clients": len(targets), "uploads": len(targets), "bytes": size * len(targets),
        "wall_s": round(wall, 3), "mb_per_s": size * len(targets) / wall / 1e6,
        "p50_s": percentile(seconds, 50), "max_s": max(seconds),
    }
