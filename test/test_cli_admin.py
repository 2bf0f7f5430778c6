"""``securifile login``, sharing and administration through the CLI, and the server list.

Probe tests run the real ``securifile`` executable as a subprocess against a real cluster
(admin server and three nodes), each user with a home folder of their own, so nothing but
what ``login`` saved there tells the CLI where the cluster is. Unit tests of the client's
switch to the admin server's server list run against tiny HTTP servers on loopback.
"""
import http.server
import io
import json
import os
import random
import re
import socket
import stat
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from securifile.cli import login as cli_login
from securifile.cli.output import UsageError
from securifile.client.admin import AdminClient, AdminUnreachable, acl_target, usable_servers
from securifile.client.errors import NoRunningServer, NoServerServing
from securifile.client.settings import LoginFolder
from securifile.client.storage import Client
from securifile.common.certs import CertificateAuthority

from .helpers import wait_for

PASSWORD = "correct horse battery"
EXECUTABLE = Path(sys.executable).with_name("securifile")


# --- running the CLI as a user --------------------------------------------------------------

class User:
    """One person at a terminal: a home folder, and the ``securifile`` command."""

    def __init__(self, home, xdg=True):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = self.home / "xdg-config" if xdg else self.home / ".config"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("SECURIFILE_") and k != "XDG_CONFIG_HOME"}
        self.env["HOME"] = str(self.home)
        if xdg:
            self.env["XDG_CONFIG_HOME"] = str(self.config)

    @property
    def login_dir(self):
        return self.config / "securifile"

    def run(self, *args, stdin="", timeout=60):
        cmd = [str(EXECUTABLE)] if EXECUTABLE.exists() else [sys.executable, "-m", "securifile.cli.main"]
        return subprocess.run(cmd + [str(a) for a in args], input=stdin, capture_output=True,
                              text=True, env=self.env, cwd=self.home, timeout=timeout)

    def ok(self, *args, **kwargs):
        r = self.run(*args, **kwargs)
        assert r.returncode == 0, f"securifile {' '.join(map(str, args))}: {r.stderr}{r.stdout}"
        return r.stdout

    def json(self, *args):
        return json.loads(self.ok(*args, "--json"))

    def login(self, cluster, username, password, *extra):
        args = ["login", "--admin", cluster.cfg.admin_url, "--user", username, *extra]
        if cluster.cfg.tls:
            args += ["--ca", cluster.layout.ca_cert]
        return self.run(*args, stdin=password + "\n")


def password_of(cluster, username):
    return json.loads((cluster.data_dir / "credentials" / f"{username}.json").read_text())["password"]


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return port


# --- probe tests ----------------------------------------------------------------------------

def test_login_keeps_a_private_key_and_certificate_and_plain_commands_work(cluster, tmp_path):
    alice = User(tmp_path / "alice")
    r = alice.login(cluster, "alice", password_of(cluster, "alice"))
    assert r.returncode == 0, r.stderr
    assert "logged in" in r.stdout and "alice" in r.stdout

    folder = alice.login_dir
    assert mode(folder) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["ca.crt", "client.crt", "client.key", "login.json", "token"]
    assert all(mode(folder / name) == 0o600 for name in files)
    saved = json.loads((folder / "login.json").read_text())
    assert saved["admin_url"] == cluster.cfg.admin_url and saved["username"] == "alice"
    assert sorted(saved["servers"]) == sorted(s.url for s in cluster.cfg.servers)
    assert b"PRIVATE KEY" in (folder / "client.key").read_bytes()

    data = os.urandom(200_000)
    (alice.home / "report.bin").write_bytes(data)
    alice.ok("put", "report.bin", "alice/docs/report.bin")
    alice.ok("get", "alice/docs/report.bin", "copy.bin")
    assert (alice.home / "copy.bin").read_bytes() == data
    assert "alice/docs/report.bin" in alice.ok("ls")
    me = alice.json("whoami")
    assert me["username"] == "alice" and me["admin"] is False

    # Only the certificate is needed: with the token gone, nodes and admin still know alice.
    (folder / "token").unlink()
    alice.ok("get", "alice/docs/report.bin", "copy2.bin")
    assert (alice.home / "copy2.bin").read_bytes() == data
    assert alice.json("whoami")["username"] == "alice"

    out = alice.ok("logout")
    assert "logged out" in out and not any(folder.iterdir())
    r = alice.run("ls")
    assert r.returncode == 2 and "securifile login" in r.stderr


def test_sharing_a_folder_with_bob_and_taking_it_back(cluster, admin, tmp_path):
    admin.add_user("bob", password=PASSWORD)
    alice, bob = User(tmp_path / "alice"), User(tmp_path / "bob", xdg=False)
    assert alice.login(cluster, "alice", password_of(cluster, "alice")).returncode == 0
    assert bob.login(cluster, "bob", PASSWORD).returncode == 0
    assert mode(bob.home / ".config" / "securifile") == 0o700  # ~/.config without XDG

    (alice.home / "a.txt").write_text("for bob's eyes\n")
    alice.ok("put", "a.txt", "alice/docs/a.txt")
    r = bob.run("get", "alice/docs/a.txt", "-")
    assert r.returncode == 1 and "no access" in r.stderr

    out = alice.ok("share", "alice/docs/", "bob", "reader")
    assert "bob is now reader" in out
    assert alice.json("grants", "alice/docs/")["grants"] == [
        {"username": "bob", "role": "reader", "granted_by": "alice"}]
    assert "bob" in alice.ok("grants", "alice/docs/") and "reader" in alice.ok("grants", "alice/docs/")
    assert bob.json("shared")["shared"] == [{"owner": "alice", "path": "docs/", "role": "reader"}]
    assert "alice/docs/" in bob.ok("shared")
    assert wait_for(lambda: bob.run("get", "alice/docs/a.txt", "-").stdout == "for bob's eyes\n",
                    timeout=10, what="bob reading the shared file")

    # a reader cannot share further; the server says why
    r = bob.run("share", "alice/docs/a.txt", "admin", "reader")
    assert r.returncode == 1 and "reader" in r.stderr and "HTTP 403" in r.stderr

    alice.ok("unshare", "alice/docs/", "bob")
    refused = wait_for(lambda: (r := bob.run("get", "alice/docs/a.txt", "-")).returncode == 1 and r,
                       timeout=10, interval=0.2, what="the revoked right to stop working")
    assert "no access" in refused.stderr and refused.stdout == ""
    assert "nothing is shared with you" in bob.ok("shared")
    r = alice.run("unshare", "alice/docs/", "bob")
    assert r.returncode == 1 and "no grant" in r.stderr


def test_login_errors_say_what_went_wrong(cluster, admin, tmp_path):
    user = User(tmp_path / "someone")
    url = cluster.cfg.admin_url

    r = user.run("login", "--admin", url, "--user", "alice", stdin="x\n")
    assert r.returncode == 2 and "--ca" in r.stderr and "http://" in r.stderr

    r = user.login(cluster, "alice", "not the password")
    assert r.returncode == 1
    assert "wrong user name or password" in r.stderr and "bad_credentials" in r.stderr
    assert not user.login_dir.exists()

    # an account valid for a second, then expired: the message says so
    carol = admin.add_user("carol", password=PASSWORD, valid_days=1 / 86400)
    end = datetime.fromisoformat(carol["valid_until"])
    wait_for(lambda: datetime.now(timezone.utc) > end, timeout=10, what="carol's account to end")
    r = user.login(cluster, "carol", PASSWORD)
    assert r.returncode == 1 and "account carol expired" in r.stderr
    assert "account_expired" in r.stderr and "administrator" in r.stderr

    r = user.run("login", "--admin", f"https://127.0.0.1:{dead_port()}", "--user", "alice",
                 "--ca", cluster.layout.ca_cert, stdin="x\n")
    assert r.returncode == 1 and "cannot reach the admin server" in r.stderr

    other = CertificateAuthority.create("Someone else's CA")
    other.save(tmp_path / "other-ca.crt", tmp_path / "other-ca.key")
    r = user.run("login", "--admin", url, "--user", "alice", "--ca", tmp_path / "other-ca.crt",
                 stdin=password_of(cluster, "alice") + "\n")
    assert r.returncode == 1
    assert "certificate verify failed" in r.stderr.lower() and "CA certificate" in r.stderr

    r = user.run("login", "--admin", url, "--user", "alice", "--ca", tmp_path / "nothing.crt",
                 stdin="x\n")
    assert r.returncode == 2 and "no such file" in r.stderr
    assert not user.login_dir.exists()


def test_administrator_manages_accounts_and_takes_a_server_offline(cluster, tmp_path):
    root, alice = User(tmp_path / "root"), User(tmp_path / "alice")
    r = root.login(cluster, "admin", password_of(cluster, "admin"), "--password-stdin")
    assert r.returncode == 0 and "administrator" in r.stdout
    assert alice.login(cluster, "alice", password_of(cluster, "alice")).returncode == 0

    created = root.json("admin", "user-add", "dave", "--email", "dave@example.com",
                        "--valid-days", "5")
    assert created["username"] == "dave" and created["email_sent"] and "password" not in created
    assert "e-mailed" in root.ok("admin", "user-enrol", "dave")
    table = root.ok("users")
    assert table.splitlines()[0].split()[:2] == ["USER", "E-MAIL"] and "dave@example.com" in table
    r = alice.run("admin", "user-remove", "dave")
    assert r.returncode == 1 and "administrators only" in r.stderr

    # Quotas: on creation and later, sizes as people type them; whoami shows the usage.
    assert root.json("admin", "user-add", "quinn", "--email", "quinn@example.com",
                     "--quota", "10G")["quota_bytes"] == 10 << 30
    assert root.json("admin", "user-set-quota", "alice", "1.5G")["quota_bytes"] == 3 << 29
    assert re.search(r"storage used +[0-9.]+ [KMG]?i?B of 1\.5 GiB \(\d+ %\)", alice.ok("whoami"))
    assert alice.json("whoami")["quota_bytes"] == 3 << 29
    assert "QUOTA" in root.ok("users").splitlines()[0]
    assert "none" in root.ok("admin", "user-set-quota", "alice", "none")
    r = root.run("admin", "user-set-quota", "alice", "12Q")
    assert r.returncode == 2 and "not a size" in r.stderr
    r = alice.run("admin", "user-set-quota", "alice", "1T")
    assert r.returncode == 1 and "administrators only" in r.stderr
    root.ok("admin", "user-remove", "dave")
    assert "dave" not in {u["username"] for u in root.json("users")["users"]}

    def node2():
        return next(s for s in root.json("admin", "servers")["servers"] if s["name"] == "node2")

    wait_for(lambda: node2()["status"] == "running", timeout=15, what="node2 running")
    root.ok("admin", "offline", "node2")
    wait_for(lambda: node2()["status"] in ("down", "offline"), timeout=15, interval=0.2,
             what="node2 shown down or offline")
    assert node2()["admin_state"] == "offline"
    assert "offline" in root.ok("admin", "servers").split("node2", 1)[1].splitlines()[0]

    # the client library now leaves node2 out, and files still go in and come out
    node2_url = cluster.cfg.server("node2").url
    with Client.from_settings(LoginFolder(alice.login_dir).settings()) as client:
        assert node2_url not in client.refresh_servers()
        assert len(client.servers) == 2
    (alice.home / "f.txt").write_text("while node2 is away\n")
    for i in range(4):
        alice.ok("put", "f.txt", f"alice/away/{i}.txt")
    assert alice.ok("get", "alice/away/3.txt", "-") == "while node2 is away\n"

    root.ok("admin", "online", "node2")
    wait_for(lambda: node2()["status"] == "running" and node2()["admin_state"] == "online",
             timeout=30, interval=0.2, what="node2 running again")


def test_login_without_encryption_keeps_only_a_token(make_cluster, tmp_path):
    cluster = make_cluster(servers=3, replicas=1, tls=False)
    alice = User(tmp_path / "alice")
    r = alice.login(cluster, "alice", password_of(cluster, "alice"))
    assert r.returncode == 0 and "plain HTTP" in r.stderr
    assert sorted(p.name for p in alice.login_dir.iterdir()) == ["login.json", "token"]
    (alice.home / "n.txt").write_text("clear text\n")
    alice.ok("put", "n.txt", "alice/n.txt")
    assert alice.ok("get", "alice/n.txt", "-") == "clear text\n"


# --- unit tests: the server list comes from the admin server ------------------------------

class FakeServer(http.server.ThreadingHTTPServer):
    """A loopback HTTP server answering GET with ``routes[path]() -> (status, JSON)``."""

    daemon_threads = True

    def __init__(self, name):
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.name = name
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.routes = {}
        self.seen = []
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()


class FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        route = self.server.routes.get(self.path.split("?")[0])
        status, body = route() if route else (404, {"error": {"code": "not_found", "message": "no"}})
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fakes():
    """An admin server and three nodes; each node answers a download with its own name."""
    admin = FakeServer("admin")
    nodes = [FakeServer(f"node{i}") for i in (1, 2, 3)]
    for node in nodes:
        node.routes["/files/alice/x"] = lambda node=node: (200, node.name.encode())
    yield admin, nodes
    for server in [admin, *nodes]:
        server.stop()


def listing(*entries):
    return {"replicas": 1, "tls": False, "servers": [
        {"name": name, "url": url, "status": status, "admin_state": state}
        for name, url, status, state in entries]}


def test_usable_servers_are_the_running_ones_only():
    a, b, c, d = "https://a:1", "https://b:2", "https://c:3", "https://d:4"
    assert usable_servers(listing(("a", a, "running", "online"), ("b", b, "down", "online"),
                                  ("c", c, "failed", "online"), ("d", d, "running", "offline"))
                          ) == ([a], [a, b, c, d])
    # just after a start the admin server has heard from nobody yet
    assert usable_servers(listing(("a", a, "unknown", "online"), ("b", b, "down", "online")))[0] == [a]
    assert usable_servers(listing(("a", a, "unknown", "online"), ("b", b, "running", "online")))[0] == [b]
    with pytest.raises(NoRunningServer) as err:
        usable_servers(listing(("a", a, "down", "online"), ("b", b, "offline", "offline")))
    assert "a down" in str(err.value) and "b offline" in str(err.value)


def test_acl_targets_keep_the_folder_slash_and_encode_names():
    assert acl_target("alice/docs/") == ("alice", "/api/v1/acl/alice/docs/")
    assert acl_target("alice") == ("alice", "/api/v1/acl/alice/")
    assert acl_target("alice/my file.txt") == ("alice", "/api/v1/acl/alice/my%20file.txt")


def test_client_uses_only_the_servers_the_admin_lists_as_running(fakes):
    admin, (n1, n2, n3) = fakes
    admin.routes["/api/v1/servers"] = lambda: (200, listing(
        ("node1", n1.url, "down", "online"), ("node2", n2.url, "running", "online"),
        ("node3", n3.url, "failed", "online")))
    for seed in range(8):  # whatever the random start, only node2
        client = Client([n1.url, n3.url], admin_url=admin.url, token="tok",
                        rng=random.Random(seed))
        assert client.get_bytes("alice/x") == b"node2"
        assert client.servers == [n2.url]
        client.close()
    assert n1.seen == [] and n3.seen == []
    assert admin.seen[0] == ("/api/v1/servers", "Bearer tok")


def test_client_falls_back_to_its_configured_list_when_the_admin_does_not_answer(fakes):
    _, (n1, n2, n3) = fakes
    dead = f"http://127.0.0.1:{dead_port()}"
    with Client([n1.url], admin_url=dead, connect_timeout=2) as client:
        assert client.get_bytes("alice/x") == b"node1"
        assert client.servers == [n1.url]
    with Client([], admin_url=dead, connect_timeout=2) as client:
        with pytest.raises(AdminUnreachable) as err:
            client.get_bytes("alice/x")
        assert "cannot reach the admin server" in str(err.value)


def test_client_does_not_fall_back_to_servers_the_admin_says_are_down(fakes):
    admin, (n1, n2, _) = fakes
    admin.routes["/api/v1/servers"] = lambda: (200, listing(("node1", n1.url, "down", "online")))
    with Client([n1.url, n2.url], admin_url=admin.url) as client:
        with pytest.raises(NoRunningServer):
            client.get_bytes("alice/x")
    assert n1.seen == [] and n2.seen == []


def test_client_waits_while_the_admin_lists_every_server_as_verifying(fakes):
    """A whole-cluster restart: the servers are checking each other's copies. Ask again."""
    admin, (n1, n2, _) = fakes
    answers = ["verifying", "verifying", "running"]
    admin.routes["/api/v1/servers"] = lambda: (200, listing(
        ("node1", n1.url, answers.pop(0) if len(answers) > 1 else answers[0], "online"),
        ("node2", n2.url, "down", "online")))
    pauses = []
    with Client([], admin_url=admin.url, sleep=pauses.append) as client:
        assert client.get_bytes("alice/x") == b"node1"
    assert pauses == [0.25, 0.5] and n2.seen == []

    answers[:] = ["verifying"]
    with Client([], admin_url=admin.url, sleep=pauses.append, unavailable_wait=0.1) as client:
        with pytest.raises(NoServerServing) as err:
            client.get_bytes("alice/x")
    assert "node1 verifying" in str(err.value)


def test_a_server_that_answered_is_asked_again_though_the_admin_lists_it_down(fakes):
    """The admin server's list lags behind a restart; the server's own answer counts."""
    admin, (n1, _, _) = fakes
    states = ["running", "down"]
    admin.routes["/api/v1/servers"] = lambda: (200, listing(
        ("node1", n1.url, states.pop(0) if len(states) > 1 else states[0], "online")))
    answers = [(503, {"error": {"code": "server_not_running", "message": "node1 is verifying"}}),
               (200, b"node1")]
    n1.routes["/files/alice/x"] = lambda: answers.pop(0)
    pauses = []
    with Client([], admin_url=admin.url, sleep=pauses.append) as client:
        assert client.get_bytes("alice/x") == b"node1"
    assert pauses == [0.25]


def test_client_reads_the_list_again_when_it_is_due(fakes):
    admin, (n1, n2, _) = fakes
    state = {"node1": "running", "node2": "down"}
    admin.routes["/api/v1/servers"] = lambda: (200, listing(
        ("node1", n1.url, state["node1"], "online"), ("node2", n2.url, state["node2"], "online")))
    now = [0.0]
    with Client([], admin_url=admin.url, server_list_ttl=30, clock=lambda: now[0]) as client:
        assert client.get_bytes("alice/x") == b"node1"
        state.update(node1="down", node2="running")
        now[0] = 10.0
        assert client.get_bytes("alice/x") == b"node1"  # not due yet: the list in hand
        now[0] = 31.0
        assert client.get_bytes("alice/x") == b"node2"
        assert client.servers == [n2.url]
    assert sum(path == "/api/v1/servers" for path, _ in admin.seen) == 2


def test_client_asks_the_admin_again_when_every_known_server_fails(fakes):
    admin, (n1, n2, _) = fakes
    state = {"node1": "running", "node2": "unknown"}
    admin.routes["/api/v1/servers"] = lambda: (200, listing(
        ("node1", n1.url, state["node1"], "online"), ("node2", n2.url, state["node2"], "online")))
    with Client([], admin_url=admin.url, connect_timeout=2) as client:
        assert client.get_bytes("alice/x") == b"node1"
        n1.stop()
        client.close()  # the kept-alive connection would outlive the server's listening socket
        state.update(node1="down", node2="running")
        assert client.get_bytes("alice/x") == b"node2"


# --- unit tests: the saved login ------------------------------------------------------------

def test_saved_login_is_private_whatever_the_umask_and_feeds_the_settings(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": "relative/ignored"}
    folder = LoginFolder.default(env)
    assert folder.path == tmp_path / ".config" / "securifile"
    old = os.umask(0)
    try:
        folder.save({"admin_url": "https://127.0.0.1:8440", "username": "alice",
                     "servers": ["https://127.0.0.1:8441"]}, "tok\n",
                    key_pem=b"KEY", cert_pem="CERT", ca_pem="CA")
    finally:
        os.umask(old)
    assert mode(folder.path) == 0o700
    assert {p.name: mode(p) for p in folder.path.iterdir()} == {
        name: 0o600 for name in ("login.json", "token", "client.key", "client.crt", "ca.crt")}
    s = folder.settings()
    assert (s.admin_url, s.username, s.token, s.servers) == (
        "https://127.0.0.1:8440", "alice", "tok", ["https://127.0.0.1:8441"])
    assert (s.ca, s.cert, s.key) == tuple(str(folder.path / n) for n in ("ca.crt", "client.crt", "client.key"))

    # a login without TLS leaves no stale certificate behind
    folder.save({"admin_url": "http://127.0.0.1:8440", "username": "alice"}, "tok2")
    assert sorted(p.name for p in folder.path.iterdir()) == ["login.json", "token"]
    assert sorted(folder.remove()) == ["login.json", "token"] and not folder.exists()
    assert LoginFolder.default({}) is None


def test_password_comes_from_a_prompt_on_a_terminal_and_from_stdin_otherwise(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(cli_login.getpass, "getpass", lambda prompt: f"typed after {prompt!r}")
    assert cli_login.read_password("alice", False, Terminal("")) == "typed after 'password for alice: '"
    assert cli_login.read_password("alice", True, Terminal("piped\n")) == "piped"
    assert cli_login.read_password("alice", False, io.StringIO("s3cret pass\nrest\n")) == "s3cret pass"
    with pytest.raises(UsageError):
        cli_login.read_password("alice", False, io.StringIO(""))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_admin_client_moves_on_to_the_next_instance_and_stays_there(fakes):
    """Two admin server instances: one refuses connections, then one answers 503; each call
    reaches the other, which is asked first from then on."""
    second, _nodes = fakes
    second.routes["/status"] = lambda: (200, {"name": "admin", "status": "running"})
    dead = f"http://127.0.0.1:{free_port()}"
    admin = AdminClient(f"{dead},{second.url}", token="tok")
    assert admin.status()["status"] == "running"
    assert admin.url == second.url
    admin.status()
    assert [p for p, _ in second.seen] == ["/status", "/status"]

    busy = FakeServer("busy")
    try:
        busy.routes["/status"] = lambda: (503, {"error": {"code": "unavailable", "message": "x"}})
        admin = AdminClient([busy.url, second.url])
        assert admin.status()["status"] == "running" and admin.url == second.url
        with pytest.raises(AdminUnreachable):  # none answers: the last one is named
            AdminClient([dead, f"http://127.0.0.1:{free_port()}"]).status()
    finally:
        busy.stop()
