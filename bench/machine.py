"""The machine the figures come from: what it is, and whether it has room for a run."""
import hashlib
import os
import platform
import shutil
import ssl
import subprocess
import time

from .measure import MIB, BenchError, format_size


def machine_info():
    def first(path, prefix):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(prefix):
                        return line.split(":", 1)[1].strip()
        except OSError:
            return None
        return None

    try:
        import tornado
        tornado_version = tornado.version
    except ImportError:
        tornado_version = None
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=30)
    mem_kib = first("/proc/meminfo", "MemTotal")
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "memory": f"{int(mem_kib.split()[0]) // 1024} MiB" if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tornado": tornado_version,
        "openssl": ssl.OPENSSL_VERSION,
        "curl": curl.stdout.split()[1] if curl.stdout else None,
        "page_reporting": page_reporting(),
        "sha256_per_core": sha256_rate(),
    }


def page_reporting(params="/sys/module/page_reporting/parameters"):
    """Whether this VM's kernel gives freed memory back to the host (virtio-balloon free
    page reporting), and how soon; None where it does not. Where it does, a page taken
    again faults into the host: writing a new file here cost 2.9-4.3 s of system CPU per
    GiB against 0.3 on pages the guest had kept (docs/PERFORMANCE.md, Caveats)."""
    try:
        with open(os.path.join(params, "min_free_ms")) as f:
            delay = int(f.read())
        with open(os.path.join(params, "page_reporting_order")) as f:
            order = int(f.read())
    except (OSError, ValueError):
        return None
    return (f"on: free blocks of {4 << order} KiB and up go back to the host after "
            f"{delay} ms")


def sha256_rate():
    """One core's SHA-256 rate: every holder hashes every byte it stores, so this bounds a
    big upload on any host (the hosts this bench ran on measured 1.1 to 1.9 GB/s)."""
    block = bytearray(MIB)
    hasher = hashlib.sha256()
    start = time.perf_counter()
    for _ in range(256):
        hasher.update(block)
    return f"{256 * MIB / (time.perf_counter() - start) / 1e6:.0f} MB/s"


def check_disk(workdir, args):
    need = (0 if args.concurrent_only else args.size_bytes * 4) + args.move_bytes * 4 \
        + (args.concurrent_bytes * (args.clients + 1) * 3 if args.clients else 0) + 512 * MIB
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise BenchError(f"{format_size(need)} of scratch space needed, {free // MIB} MiB free")
