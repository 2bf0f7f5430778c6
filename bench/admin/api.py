"""The same pages through the REST API of a ``securifile-admin serve`` on the bench database."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from .dataset import ADMIN, BIG, BIG_FOLDER, READER, SERVERS, SHAREE, account_uid, log
from .queries import PAGE, expect, page_of, summary, timed


# -- the HTTP path -----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AdminServer:
    """``securifile-admin --config X serve`` on the bench database, TLS, in a scratch folder."""

    def __init__(self, url, workdir):
        from securifile.common.certnames import ROLE_ADMIN, CertLayout
        from securifile.common.certs import ensure_ca, ensure_server_cert
        from securifile.common.config import Config, ServerEntry, dump_config
        from securifile.launcher.certs import ensure_peer_secret

        self.workdir = Path(workdir)
        self.layout = CertLayout(self.workdir / "certs")
        ca = ensure_ca(self.layout)
        ensure_peer_secret(self.layout)
        ensure_server_cert(self.layout, ca, "admin", ROLE_ADMIN)
        self.port = free_port()
        cfg = Config(servers=[ServerEntry(s, f"https://127.0.0.1:{9001 + i}")
                              for i, s in enumerate(SERVERS)],
                     replicas=1, tls=True, certs_dir=self.layout.root,
                     data_dir=self.workdir / "var", admin_url=f"https://127.0.0.1:{self.port}",
                     database_url=url, syslog_port=0)
        self.config = self.workdir / "admin.toml"
        self.config.write_text(dump_config(cfg))
        self.proc = None
        self.conn = None

    def start(self, timeout=60):
        from securifile.common.tls import client_context

        self.logfile = open(self.workdir / "admin.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "securifile.admin.main", "--config", str(self.config),
             "--log-level", "WARNING", "serve"],
            stdout=self.logfile, stderr=subprocess.STDOUT)
        self.ctx = client_context(self.layout.ca_cert)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.workdir / "admin.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"admin server exited ({self.proc.returncode}):\n{tail}")
            try:
                if self.get("/status")[0] == 200:
                    return
            except OSError:
                self.conn = None
            time.sleep(0.2)
        raise RuntimeError("admin server did not come up")

    def token(self, username, admin=False):
        from securifile.common.tokens import load_private_key, mint_token

        return mint_token(load_private_key(self.layout.token_private_key), username, 3600,
                          admin=admin, uid=account_uid(username))[0]

    def get(self, path, token=None):
        if self.conn is None:
            self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                    timeout=60)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn.request("GET", path, headers=headers)
        r = self.conn.getresponse()
        body = r.read()
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return r.status, body

    def cpu_seconds(self):
        """The server process's CPU time so far (user + system, from /proc; 10 ms ticks, so
        only a mean over many calls means anything)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.conn is not None:
            self.conn.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "logfile", None):
            self.logfile.close()


def run_http(url, args, v, since):
    with tempfile.TemporaryDirectory(prefix="sf-bench-admin-") as work:
        server = AdminServer(url, work)
        server.start()
        try:
            tokens = {u: server.token(u, admin=(u == ADMIN)) for u in (BIG, READER, SHAREE, ADMIN)}

            def call(path, user, check):
                def run():
                    status, body = server.get(path, tokens[user])
                    expect(status == 200, f"GET {path} as {user}: {status} {body[:200]!r}")
                    check(json.loads(body))
                return run

            def count_is(key, n, what):
                return lambda d: expect(len(d[key]) == n, what)

            def files(total):
                rows, more = page_of(total)
                return lambda d: expect(len(d["files"]) == rows
                                        and (d["next"] is not None) == more,
                                        f"{len(d['files'])} files, next={d['next']}")

            q = lambda s: quote(s, safe="")  # noqa: E731
            inbox = f"/api/v1/files?limit={PAGE}&prefix={q(BIG + '/' + BIG_FOLDER + '/')}"
            tree = f"/api/v1/files?limit={PAGE}&prefix={q(BIG + '/' + v['tree_top'] + '/')}"
            storage = f"/api/v1/servers/{SERVERS[0]}/storage?since="
            now = since + timedelta(hours=1)
            burst = min(300, v["last_event"])
            cases = [
                ("GET /files big/inbox/, page 1, owner", call(inbox, BIG, files(v["inbox_count"]))),
                ("GET /files big/inbox/, deep page, owner",
                 call(f"{inbox}&after={q(v['inbox_deep'])}", BIG,
                      files(v["inbox_count"] - v["inbox_deep_at"] - 1))),
                (f"GET /files big/{v['tree_top']}/ recursive, page 1",
                 call(tree + "&recursive=1", BIG, files(v["tree_count"]))),
                ("GET /files big/inbox/ as reader (folder grant)",
                 call(inbox, READER, files(v["inbox_count"]))),
                ("GET /files big/inbox/ as sharee (file grants)",
                 call(inbox, SHAREE, files(v["sharee_inbox"]))),
                (f"GET /users?limit={PAGE} (admin)",
                 call(f"/api/v1/users?limit={PAGE}", ADMIN,
                      count_is("users", min(PAGE, v["user_count"]), "users"))),
                (f"GET /users?limit={PAGE}&after=..., a middle page (admin)",
                 call(f"/api/v1/users?limit={PAGE}&after={q(v['mid_user'])}", ADMIN,
                      count_is("users", page_of(
                          v["user_count"] - v["user_count"] // 2 - 1)[0], "users"))),
                (f"GET /users/big/files?limit={PAGE}",
                 call(f"/api/v1/users/{BIG}/files?limit={PAGE}", BIG,
                      count_is("files", min(PAGE, v["big_count"]), "owned"))),
                (f"GET /users/big/files?limit={PAGE}, deep page",
                 call(f"/api/v1/users/{BIG}/files?limit={PAGE}&after={q(v['owned_deep'])}", BIG,
                      count_is("files", page_of(
                          v["big_count"] - v["owned_deep_at"] - 1)[0], "owned"))),
                ("GET /servers (admin)",
                 call("/api/v1/servers", ADMIN,
                      count_is("servers", len(SERVERS), "servers"))),
                ("GET /servers/node1/storage?since=10min (the plot's first load)",
                 call(storage + q((now - timedelta(minutes=10)).isoformat()), ADMIN,
                      lambda d: expect(250 <= len(d["samples"]) <= 350, "samples"))),
                ("GET /servers/node1/storage?since=10s (a plot tick)",
                 call(storage + q((now - timedelta(seconds=10)).isoformat()), ADMIN,
                      lambda d: expect(1 <= len(d["samples"]) <= 10, "samples"))),
                ("GET /events?limit=50 (the panel's first load, admin)",
                 call("/api/v1/events?limit=50", ADMIN,
                      count_is("events", min(50, v["last_event"]), "events"))),
                (f"GET /events?after=...&limit={PAGE} (a burst of {burst}, admin)",
                 call(f"/api/v1/events?after={v['last_event'] - burst}&limit={PAGE}", ADMIN,
                      count_is("events", min(PAGE, burst), "events"))),
            ]
            results = []
            for name, fn in cases:
                if args.only and not any(word in name for word in args.only):
                    continue
                fn()
                times, cpu = timed(fn, args.runs, args.warmup, server.cpu_seconds)
                res = summary(name, times, "http", cpu_ms=cpu)
                results.append(res)
                log(f"{name}: median {res['median_ms']:.2f} ms, p95 {res['p95_ms']:.2f} ms, "
                    f"server CPU {cpu:.2f} ms")
            return results
        finally:
            server.stop()
