"""Test helpers: raw HTTP(S) calls to named nodes, and polling with a deadline."""
import hashlib
import json
import os
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.testing import bind_unused_port

from securifile.common.tls import client_context

from .netns import http_connection


def serve_app(app, port=None):
    """(server, port): ``app`` served in this process on a free loopback port, or on
    ``port`` (a peer restarting where it was)."""
    server = HTTPServer(app)
    if port is None:
        sock, port = bind_unused_port()
        server.add_sockets([sock])
    else:
        server.add_sockets(bind_sockets(port, "127.0.0.1"))
    return server, port


def wait_for(predicate, timeout=15.0, interval=0.05, what="condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


class Api:
    """Talks to one named node of a Cluster as the cluster's first user (or another identity)."""

    def __init__(self, cluster, cert=True, token=None):
        self.cluster = cluster
        user = cluster.user
        self.username = user.get("username")
        self.token = token
        if cluster.cfg.tls:
            self.ctx = client_context(cluster.layout.ca_cert,
                                      user["cert"] if cert else None, user["key"] if cert else None)
        else:
            self.ctx = None
            if token is None:
                self.token = Path(user["token_file"]).read_text().strip()

    def with_identity(self, cert=None, key=None, token=None):
        other = Api.__new__(Api)
        other.cluster, other.username, other.token = self.cluster, self.username, token
        other.ctx = client_context(self.cluster.layout.ca_cert, cert, key) if self.cluster.cfg.tls else None
        return other

    def connection(self, node, timeout=30):
        """A connection to ``node`` (from the client namespace of a cluster in namespaces)."""
        return http_connection(self.cluster.url(node), self.ctx, timeout,
                               getattr(self.cluster, "client_netns", None))

    def request(self, node, method, path, body=None, headers=None, raw_path=False):
        """``path`` is 'owner/rel' (quoted here) or, with raw_path, sent exactly as given."""
        target = path if raw_path else "/files/" + quote(path, safe="/")
        h = dict(headers or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        conn = self.connection(node)
        try:
            conn.request(method, target, body=body, headers=h)
            r = conn.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            conn.close()

    def put(self, node, path, data, **kw):
        return self.request(node, "PUT", path, body=data, **kw)

    def get(self, node, path, **kw):
        return self.request(node, "GET", path, **kw)

    def follow(self, node, method, path, max_hops=5, **kw):
        """Like curl -L: follow 307s by node URL; returns (final node, response)."""
        r = self.request(node, method, path, **kw)
        for _ in range(max_hops):
            if r.status != 307:
                return node, r
            loc = urlsplit(r.headers["Location"])
            node = self.node_for(f"{loc.scheme}://{loc.netloc}")
            r = self.request(node, method, loc.path + (("?" + loc.query) if loc.query else ""),
                             raw_path=True, **kw)
        raise AssertionError("too many redirects")

    def node_for(self, base):
        added = [entry for entry, _config in getattr(self.cluster, "added", {}).values()]
        for s in [*self.cluster.cfg.servers, *added]:
            if s.url.rstrip("/") == base.rstrip("/"):
                return s.name
        raise AssertionError(f"redirect to a server outside the cluster: {base}")

    def status(self, node):
        return json.loads(self.request(node, "GET", "/status", raw_path=True).body)

    def sees(self, observer, peer, status):
        """True once ``observer`` reports ``peer`` as ``status``."""
        st = self.cluster.status(observer)
        return st is not None and any(p["name"] == peer and p["status"] == status for p in st["peers"])


def disk_copy(cluster, node, owner, rel):
    return cluster.cfg.node_data_dir(node) / "files" / owner / rel


class AdminApi:
    """JSON calls to the admin server as a logged-in user (the administrator by default);
    ``url``: one admin server instance's (by default the configuration's first)."""

    def __init__(self, cluster, username="admin", password=None, token=None, url=None):
        self.cluster = cluster
        self.username = username
        self.url = url or cluster.cfg.admin_url
        u = urlsplit(self.url)
        self.host, self.port, self.https = u.hostname, u.port, u.scheme == "https"
        self.ctx = client_context(cluster.layout.ca_cert) if self.https else None
        self.token = token
        if token is None and username is not None:
            if password is None:
                creds = cluster.data_dir / "credentials" / f"{username}.json"
                password = json.loads(creds.read_text())["password"]
            r = self.call("POST", "/api/v1/login", {"username": username, "password": password})
            assert r.status == 200, r
            self.token = r.json()["token"]

    def call(self, method, path, payload=None, headers=None):
        h = {"Content-Type": "application/json"} if payload is not None else {}
        h.update(headers or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        conn = http_connection(self.url, self.ctx, 30,
                               getattr(self.cluster, "client_netns", None))
        try:
            conn.request(method, path, body=None if payload is None else json.dumps(payload), headers=h)
            r = conn.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            conn.close()

    def get(self, path):
        return self.call("GET", path)

    def add_user(self, username, password="correct horse battery", valid_days=30, admin=False):
        r = self.call("POST", "/api/v1/users", {"username": username, "email": f"{username}@example.com",
                                                "valid_days": valid_days, "password": password,
                                                "admin": admin})
        assert r.status == 201, r
        return r.json()

    def as_user(self, username, password="correct horse battery"):
        return AdminApi(self.cluster, username, password, url=self.url)

    def node_api(self, node_token=None):
        """An Api for the storage nodes with this user's bearer token."""
        return Api(self.cluster, cert=False, token=node_token or self.token)


class Killed(BaseException):
    """The process died here (SIGKILL): nothing after this step runs."""


def killed_after(monkeypatch, obj, name):
    """Make ``obj.name`` do its work, then "kill the process" (raise Killed)."""
    real = getattr(obj, name)

    def step(*args, **kwargs):
        real(*args, **kwargs)
        raise Killed(name)

    monkeypatch.setattr(obj, name, step)


def refuse_reads_without_waiting(monkeypatch, error):
    """``os.preadv`` with ``RWF_NOWAIT`` raises ``error``; other reads go on as usual."""
    preadv = os.preadv

    def refusing(fd, buffers, offset, flags=0):
        if flags & os.RWF_NOWAIT:
            raise error
        return preadv(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "preadv", refusing)
