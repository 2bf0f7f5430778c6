"""A folder through our own command-line client, one file at a time and several at once.

The single-client figures are one curl sending file after file, as the customer's users use
vsftpd today. Our client moves a folder's files several at a time (``securifile put|get
--parallel N``): this measures ``put`` of a folder of the bench's small files and ``get`` of
it back, for each N asked, as a user would run them. The rates are files over the whole
command's wall time (Python starting, a ``get``'s listing and the per-file lines included);
the nearest reference is vsftpd's one session's small-file rate in the same run.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import time

from .measure import BenchError


def parallel_settings(text):
    """``--folder-parallel``: a comma list of numbers from 1 to 16 (empty: no figure)."""
    try:
        settings = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        settings = None
    if settings is None or not all(1 <= n <= 16 for n in settings):
        raise argparse.ArgumentTypeError("a comma list of numbers from 1 to 16, or empty")
    return settings


def folder_transfers(launcher, cluster, paths, parallel, workdir, timeout_s, log=print):
    """``{"files", "parallel": {n: {"put_per_s", "get_per_s"}}}`` for the files ``paths``,
    through the running ``cluster`` (a ``SecuriFileCluster``, or the tests' cluster)."""
    cluster_json = os.path.join(cluster.data_dir, "cluster.json")
    with open(cluster_json) as f:
        described = json.load(f)
    owner, name = described["user"]["username"], f"securifile r={described['replicas']}"
    folder = os.path.join(workdir, "folder")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for path in paths:
        os.link(path, os.path.join(folder, os.path.basename(path)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURIFILE_", "XDG_"))}
    env.update(SECURIFILE_CLUSTER=cluster_json, HOME=os.path.join(workdir, "home"))
    figures = {}
    for n in parallel:
        remote = f"{owner}/folder-p{n}-{time.monotonic_ns()}/"
        back = os.path.join(workdir, f"back-p{n}")
        put = _timed([launcher, "-q", "put", "--parallel", str(n), folder, remote], env,
                     timeout_s)
        get = _timed([launcher, "-q", "get", "--parallel", str(n), remote, back], env,
                     timeout_s)
        _same_files(folder, back)
        shutil.rmtree(back)
        figures[n] = {"put_per_s": len(paths) / put, "get_per_s": len(paths) / get}
        log(f"{name} folder of {len(paths)} files, {n} at a time: "
            f"put {figures[n]['put_per_s']:.0f} files/s, get {figures[n]['get_per_s']:.0f} "
            "files/s")
    shutil.rmtree(folder)
    return {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": len(paths), "size": os.path.getsize(paths[0]) if paths else 0,
        "parallel": figures,
    }


def _timed(cmd, env, timeout_s):
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"'{' '.join(cmd)}' not done after {timeout_s}s") from exc
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise BenchError(f"'{' '.join(cmd)}' failed ({proc.returncode}): {proc.stderr[-500:]}")
    return wall


def _same_files(folder, back):
    """Every file came back whole (the CLI checked each digest; the bytes are compared here)."""
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as a, open(os.path.join(back, name), "rb") as b:
            if a.read() != b.read():
                raise BenchError(f"{name} came back different from the folder's")
    if sorted(os.listdir(back)) != sorted(os.listdir(folder)):
        raise BenchError(f"{back} does not hold the folder's files")
