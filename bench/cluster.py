"""Our own cluster under the bench: ``securifile up`` in the foreground, driven through cluster.json."""
import json
import os
import signal
import subprocess
import time

from .measure import BenchError, Target


class SecuriFileCluster:
    """A local cluster of ``servers`` nodes with ``replicas`` copies besides the origin."""

    def __init__(self, launcher, data_dir, servers=3, replicas=0, start_timeout_s=120,
                 env=None):
        self.launcher = launcher
        self.env = env  # SECURIFILE_* settings for every process of the cluster
        self.data_dir = data_dir
        self.servers = servers
        self.replicas = replicas
        self.start_timeout_s = start_timeout_s
        self.name = f"securifile r={replicas}"
        self.proc = None
        self.info = None

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        cluster_json = os.path.join(self.data_dir, "cluster.json")
        if os.path.exists(cluster_json):
            os.remove(cluster_json)
        self.log_path = os.path.join(self.data_dir, "launcher.log")
        log = open(self.log_path, "wb")
        # free ports and certificates of its own: nothing shared with a cluster a developer runs
        cmd = [self.launcher, "up", "--servers", str(self.servers), "--replicas",
               str(self.replicas), "--data-dir", self.data_dir, "--base-port", "0",
               "--certs-dir", os.path.join(self.data_dir, "certs"), "--host", "127.0.0.1"]
        # its own process group, so that stopping it can never reach anything but its nodes
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(self.env or {})})
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"'{' '.join(cmd)}' exited with {self.proc.returncode}: "
                                 f"{self.log_tail()}")
            if os.path.exists(cluster_json) and self._all_answer(cluster_json):
                return self.target()
            time.sleep(0.25)
        self.stop()
        raise BenchError(f"cluster not up after {self.start_timeout_s}s: {self.log_tail()}")

    def log_tail(self, chars=1500):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-chars:].decode(errors="replace")
        except OSError:
            return ""

    def _all_answer(self, cluster_json):
        try:
            with open(cluster_json) as f:
                info = json.load(f)
        except (OSError, ValueError):
            return False  # still being written
        for server in info.get("servers", []):
            cmd = ["curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}",
                   "--max-time", "5", *self._trust(info), f"{server['url'].rstrip('/')}/status"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if proc.stdout.strip() != "200":
                return False
        self.info = info
        return len(info.get("servers", [])) == self.servers

    def peer_connections(self):
        """New connections (a TLS handshake each) the nodes have opened to each other so far,
        from each node's /status; None when a node does not say."""
        total = 0
        for server in self.info["servers"]:
            cmd = ["curl", "--silent", "--max-time", "5", *self._trust(self.info),
                   f"{server['url'].rstrip('/')}/status"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            try:
                total += json.loads(proc.stdout)["peer_client"]["connections_created"]
            except (ValueError, KeyError, TypeError):
                return None
        return total

    @staticmethod
    def _trust(info):
        if not info.get("tls", True):
            raise BenchError("the cluster came up without TLS; the bench measures TLS only")
        user = info["user"]
        return ["--cacert", info["ca_cert"], "--cert", user["cert"], "--key", user["key"]]

    def node_pids(self):
        return [server["pid"] for server in self.info["servers"]]

    def target(self, server=0):
        """How curl reaches the cluster through the ``server``-th node (the first by default)."""
        entry = self.info["servers"][server]["url"].rstrip("/")
        username = self.info["user"]["username"]
        admin = self.info.get("admin") or {}
        labels = {s["pid"]: s["name"] for s in self.info["servers"]}
        if admin.get("pid"):
            labels[admin["pid"]] = "admin"
        return Target(name=self.name, base_url=f"{entry}/files/{username}/bench",
                      curl_options=self._trust(self.info), root_pids=self.node_pids(),
                      side_pids=[admin["pid"]] if admin.get("pid") else [],
                      labels=labels, follow_redirects=True,
                      extra={"servers": [s["url"] for s in self.info["servers"]]})

    def client_targets(self, count):
        """One target per concurrent client, spread over the nodes in turn: real clients
        each start at a server picked at random, so no one node takes every session."""
        return [self.target(i % len(self.info["servers"])) for i in range(count)]

    def delete(self, remote, free_timeout_s=120):
        """DELETE ``remote``; returns once every node has freed it (a big file's blocks are
        freed by a worker thread after the answer, ``nodes/trash.py``: the next timed
        transfer must not share the disk with that)."""
        target = self.target()
        subprocess.run(["curl", "--silent", "--output", "/dev/null", "--max-time", "60",
                        "--location", "--request", "DELETE", *target.curl_options,
                        target.url(remote)], capture_output=True, timeout=90)
        deadline = time.monotonic() + free_timeout_s
        trash = [os.path.join(self.data_dir, "nodes", name, "trash")
                 for name in os.listdir(os.path.join(self.data_dir, "nodes"))]
        while any(os.path.isdir(t) and os.listdir(t) for t in trash):
            if time.monotonic() > deadline:
                raise BenchError(f"the nodes had not freed {remote} after {free_timeout_s}s")
            time.sleep(0.05)

    def stop(self):
        """Ctrl-C as a person would; then escalate within the launcher's own process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            try:
                if sig == signal.SIGKILL:
                    os.killpg(self.proc.pid, sig)
                else:
                    self.proc.send_signal(sig)
                self.proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        # nodes that outlived their launcher are ours too; the command line guards against a
        # pid the kernel has handed to something else meanwhile
        admin_pid = (self.info or {}).get("admin", {}).get("pid")
        for pid in (self.node_pids() + ([admin_pid] if admin_pid else [])) if self.info else []:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"securifile" not in f.read():
                        continue
                os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue
