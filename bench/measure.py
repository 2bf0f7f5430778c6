"""Measuring transfers with curl and the peak memory of server process trees.

Everything here is independent of the server being measured: a server is described by a
``Target`` (how to build a URL, which curl options it needs, which processes are its own).
"""
import hashlib
import os
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field

MIB = 1024 * 1024
SIZE_SUFFIXES = {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB}

# curl's own numbers per transfer; one line each, parsed by ``parse_write_out``.
WRITE_OUT = "%{http_code} %{size_upload} %{size_download} %{time_total} %{num_connects} %{num_redirects}\\n"


class BenchError(RuntimeError):
    """A measurement could not be made (server refused, curl failed, timeout)."""


def parse_size(text):
    """'256M' -> 268435456; binary multiples, as the issue's '1 GiB' means."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1] if text and text[-1] in SIZE_SUFFIXES else ""
    number = text[: len(text) - len(unit)]
    return int(float(number) * SIZE_SUFFIXES[unit])


def format_size(size):
    for unit in ("G", "M", "K"):
        if size >= SIZE_SUFFIXES[unit] and size % SIZE_SUFFIXES[unit] == 0:
            return f"{size // SIZE_SUFFIXES[unit]}{unit}"
    return str(size)


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_range(count, attempts=50):
    """A run of ``count`` consecutive free loopback ports (for FTP passive mode).

    Taken below the kernel's ephemeral range, where curl's own outgoing connections and
    their TIME-WAIT entries would otherwise collide with the server's passive ports.
    """
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    low, high = 10000, max(10000 + count, ephemeral_low)
    for base in range(low, high - count, max(count, (high - low) // attempts)):
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base, base + count - 1
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise BenchError(f"no {count} consecutive free ports between {low} and {high}")


def wait_for_port(port, deadline_s, process=None):
    """Poll until something accepts on 127.0.0.1:port, or fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BenchError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {deadline_s}s")


def make_random_file(path, size):
    """Write ``size`` random bytes to ``path`` and return their SHA-256 hex digest."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MIB))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def median(values):
    return statistics.median(values) if values else None


# ---------------------------------------------------------------- process memory

def _read_status(pid):
    """(name, VmHWM KiB, VmRSS KiB) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    if "VmHWM" not in fields:  # a zombie or a kernel thread
        return None
    return fields.get("Name", "?"), int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])


def process_tree(root_pids):
    """The root pids and all their living descendants, each mapped to the root it came from."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: the ppid follows the last ')'
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree = {}
    for root in root_pids:
        todo = [root]
        while todo and len(tree) < 10000:
            pid = todo.pop()
            if pid in tree:
                continue
            tree[pid] = root
            todo.extend(children.get(pid, ()))
    return tree


def reset_peak_rss(root_pids):
    """Reset VmHWM of a process tree (``echo 5 > clear_refs``) so a phase gets its own peak."""
    for pid in process_tree(root_pids):
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


class PeakMemorySampler:
    """Samples VmHWM of every process in the server trees while a phase runs.

    The kernel keeps each process's peak (VmHWM) itself; sampling is only needed to catch
    processes that exit during the phase (vsftpd's per-session processes) and to name them.
    ``labels`` names the roots (node1, admin, ...); ``headline`` lists the roots whose
    largest process is the figure reported (the others are recorded beside it).
    """

    def __init__(self, root_pids, interval_s=0.2, reset=True, labels=None, headline=None,
                 on_new_process=None):
        self.root_pids = list(root_pids)
        self.on_new_process = on_new_process
        self.labels = labels or {}
        self.headline = set(headline or root_pids)
        self.interval_s = interval_s
        self.peaks = {}  # pid -> {"name", "root", "peak_kib"}
        self.max_total_kib = 0  # the most that the headline processes held at one moment
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._reset = reset

    def __enter__(self):
        if self._reset:
            reset_peak_rss(self.root_pids)
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self):
        total = 0
        for pid, root in process_tree(self.root_pids).items():
            status = _read_status(pid)
            if status is None:
                continue
            name, hwm, rss = status
            label = self.labels.get(root, name) if pid == root else f"{self.labels.get(root, name)}/{name}"
            if pid not in self.peaks and self.on_new_process:
                self.on_new_process(pid)
            known = self.peaks.setdefault(pid, {"name": label, "root": root, "peak_kib": 0})
            known["peak_kib"] = max(known["peak_kib"], hwm)
            if root in self.headline:
                total += rss
        self.max_total_kib = max(self.max_total_kib, total)

    def result(self):
        """Per-process peaks, the largest headline process, and the most held at one moment."""
        procs = [{"pid": pid, **info} for pid, info in sorted(self.peaks.items())]
        max_kib = max((p["peak_kib"] for p in procs if p["root"] in self.headline), default=0)
        return {
            "max_process_mib": round(max_kib / 1024, 1),
            "max_total_mib": round(self.max_total_kib / 1024, 1),
            "processes": procs,
        }


# ---------------------------------------------------------------- other people's CPU use

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _busy_jiffies():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def _tree_jiffies(root_pid):
    total = 0
    for pid in process_tree([root_pid]):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, and of reaped children
    return total


def _tree_run_delay_ns(root_pid):
    """Nanoseconds the threads of the tree spent runnable but waiting for a CPU."""
    total = 0
    for pid in process_tree([root_pid]):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total


class ForeignCpu:
    """How many cores processes outside the bench's own tree kept busy during a block.

    The machine is shared (test suites, other clusters); a figure taken while something else
    burnt CPU is not a figure of the server under test. ``waiting_cores`` is how long the
    bench's own threads (servers, curl) sat runnable without a CPU, in cores: contention
    among themselves as well as with others, kept to compare like with like.
    """

    def __init__(self, root_pid=None, server_pids=(), groups=None):
        self.root_pid = root_pid or os.getpid()
        self.server_pids = list(server_pids)
        # bench/cpugroups.py's BenchGroups, when the kernel counts for us (None: /proc)
        self.groups = groups
        self.cores = None
        self.waiting_cores = None
        self.server_cpu_s = None  # CPU seconds the server's own processes used

    def _ours_s(self):
        if self.groups is not None:
            return self.groups.group.seconds()
        return _tree_jiffies(self.root_pid) / CLOCK_TICKS

    def _server_s(self):
        if not self.server_pids:
            return 0.0
        if self.groups is not None:
            return self.groups.for_server(self.server_pids).seconds()
        return sum(_tree_jiffies(pid) for pid in self.server_pids) / CLOCK_TICKS

    def __enter__(self):
        self._t0, self._busy0, self._ours0 = time.monotonic(), _busy_jiffies(), self._ours_s()
        self._wait0 = _tree_run_delay_ns(self.root_pid)
        self._server0 = self._server_s()
        return self

    def __exit__(self, *exc):
        seconds = max(time.monotonic() - self._t0, 1e-3)
        foreign = (_busy_jiffies() - self._busy0) / CLOCK_TICKS - (self._ours_s() - self._ours0)
        self.cores = max(0.0, foreign / seconds)
        waited = _tree_run_delay_ns(self.root_pid) - self._wait0
        self.waiting_cores = max(0.0, waited / 1e9 / seconds)
        self.server_cpu_s = self._server_s() - self._server0


def wait_for_quiet(max_cores, max_wait_s, log, groups=None):
    """Wait (bounded) until other processes use at most ``max_cores``; returns what was seen."""
    deadline = time.monotonic() + max_wait_s
    told = False
    while True:
        with ForeignCpu(groups=groups) as cpu:
            time.sleep(1.0)
        if cpu.cores <= max_cores or time.monotonic() >= deadline:
            if told:
                log(f"going on with other processes at {cpu.cores:.2f} cores")
            return cpu.cores
        if not told:
            log(f"other processes busy ({cpu.cores:.2f} cores); waiting up to {max_wait_s}s")
            told = True


# ---------------------------------------------------------------- curl transfers

@dataclass
class Target:
    """How curl reaches one server under test."""

    name: str
    base_url: str  # files go to base_url + "/" + remote name
    curl_options: list  # TLS trust, credentials, protocol switches
    root_pids: list
    http: bool = True  # False for FTP: no status codes, no Expect header
    follow_redirects: bool = False
    labels: dict = field(default_factory=dict)  # root pid -> name shown in the results
    side_pids: list = field(default_factory=list)  # watched, but not the headline (our admin)
    extra: dict = field(default_factory=dict)

    def url(self, remote):
        return f"{self.base_url}/{remote}"


def parse_write_out(text):
    transfers = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6:
            continue
        code, up, down, total, connects, redirects = parts
        transfers.append({
            "code": int(code), "size_upload": int(up), "size_download": int(down),
            "time_total": float(total), "num_connects": int(connects),
            "num_redirects": int(redirects),
        })
    return transfers


def curl_command(target, timeout_s, config="-"):
    """The curl command line for ``target``, reading its transfers from the file ``config``."""
    command = [
        "curl", "--silent", "--show-error", "--fail-early", "--globoff",
        "--write-out", WRITE_OUT, "--max-time", str(int(timeout_s)),
        "--config", config,
    ] + target.curl_options
    if target.http:
        # curl waits for "100 Continue" before each body otherwise: one round trip per file.
        command += ["--header", "Expect:"]
        if target.follow_redirects:
            command += ["--location"]
    return command


def upload_config(target, uploads):
    """curl config lines for ``uploads``, pairs of (local path, remote name)."""
    lines = []
    for path, remote in uploads:
        lines += [f"url = {_quote(target.url(remote))}", f"upload-file = {_quote(path)}",
                  'output = "/dev/null"']
    return lines


def _run_curl(target, config_lines, timeout_s):
    """Run one curl process with a config (one URL block per transfer) and parse its timings."""
    common = curl_command(target, timeout_s)
    config = "\n".join(config_lines) + "\n"
    started = time.monotonic()
    try:
        proc = subprocess.run(common, input=config, capture_output=True, text=True,
                              timeout=timeout_s + 30)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"curl against {target.name} timed out after {timeout_s}s") from exc
    wall = time.monotonic() - started
    transfers = parse_write_out(proc.stdout)
    if proc.returncode != 0:
        raise BenchError(f"curl against {target.name} failed ({proc.returncode}): "
                         f"{proc.stderr.strip()[:500]}")
    return transfers, wall


def upload_codes(target):
    """What a stored upload answers: HTTP 200/201/204, FTP 226/250."""
    return {200, 201, 204} if target.http else {226, 250}


def check_transfers(target, transfers, expected, ok_codes):
    if len(transfers) != expected:
        raise BenchError(f"{target.name}: {len(transfers)} of {expected} transfers reported")
    bad = [t["code"] for t in transfers if t["code"] not in ok_codes]
    if bad:
        raise BenchError(f"{target.name}: unexpected status codes {sorted(set(bad))}")


def _quote(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def upload(target, local_path, remote, size, timeout_s):
    """Upload one file; MB/s from curl's own transfer time."""
    lines = [f"url = {_quote(target.url(remote))}", f"upload-file = {_quote(local_path)}",
             'output = "/dev/null"']
    transfers, wall = _run_curl(target, lines, timeout_s)
    ok = {200, 201, 204} if target.http else {226, 250}
    check_transfers(target, transfers, 1, ok)
    t = transfers[0]
    if t["size_upload"] != size:
        raise BenchError(f"{target.name}: uploaded {t['size_upload']} of {size} bytes")
    return {"mb_per_s": size / t["time_total"] / 1e6, "seconds": t["time_total"], "wall": wall}


def download(target, remote, size, timeout_s):
    lines = [f"url = {_quote(target.url(remote))}", 'output = "/dev/null"']
    transfers, wall = _run_curl(target, lines, timeout_s)
    check_transfers(target, transfers, 1, {200} if target.http else {226, 250})
    t = transfers[0]
    if t["size_download"] != size:
        raise BenchError(f"{target.name}: downloaded {t['size_download']} of {size} bytes")
    return {"mb_per_s": size / t["time_total"] / 1e6, "seconds": t["time_total"], "wall": wall,
            "redirects": t["num_redirects"]}


def download_digest(target, remote, timeout_s):
    """SHA-256 of a download, outside any timed run, to prove the bytes came back intact."""
    cmd = ["curl", "--silent", "--show-error", "--fail", "--globoff", "--max-time",
           str(int(timeout_s)), *target.curl_options,
           *(["--location"] if target.follow_redirects else []), target.url(remote)]
    digest = hashlib.sha256()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for block in iter(lambda: proc.stdout.read(MIB), b""):
            digest.update(block)
        proc.wait(timeout=timeout_s + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    if proc.returncode != 0:
        raise BenchError(f"{target.name}: verifying download failed: {proc.stderr.read()[:300]}")
    return digest.hexdigest()


def upload_many(target, local_paths, remote_prefix, timeout_s):
    """Upload small files one after another in a single curl process (keep-alive reuse).

    The rate counts the files after the first, from curl's own per-transfer times: the first
    transfer carries the session start (TLS handshake; for FTPS the login, which with curl and
    vsftpd sometimes stalls 0.2-1 s on the first command), reported on its own as
    ``first_file_ms``. The rate over all files and over curl's wall time are kept beside it.
    """
    lines = upload_config(target, [(path, f"{remote_prefix}/{i:04d}.bin")
                                   for i, path in enumerate(local_paths)])
    transfers, wall = _run_curl(target, lines, timeout_s)
    check_transfers(target, transfers, len(local_paths), {200, 201, 204} if target.http else {226, 250})
    busy = sum(t["time_total"] for t in transfers)
    steady = sum(t["time_total"] for t in transfers[1:])
    return {
        "files_per_s": (len(transfers) - 1) / steady if steady else None,
        "files_per_s_all": len(transfers) / busy,
        "files_per_s_wall": len(transfers) / wall,
        "first_file_ms": transfers[0]["time_total"] * 1000,
        "slowest_ms": max(t["time_total"] for t in transfers[1:]) * 1000,
        "connections": sum(t["num_connects"] for t in transfers),
    }
