"""Fixed data for the terminal client's snapshot tests: an in-memory stand-in for the admin
server's REST client (the same methods as AdminClient, answering fixed dicts) and a fixed
clock, so that every run draws the same screen. Everything else about the screens runs for
real; the Pilot tests in test_tui_app.py use a real cluster instead.
"""
from datetime import datetime, timedelta, timezone

from securifile.client.errors import PermissionDenied
from securifile.tui.session import Session

NOW = datetime(2026, 3, 14, 12, 0, 0, tzinfo=timezone.utc)
GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10


def at(minutes_ago, seconds=0):
    return (NOW - timedelta(minutes=minutes_ago, seconds=seconds)).isoformat()


def _samples(used_at, available_total, until_minutes_ago=0):
    """Samples every 20 s over the last 10 minutes; ``used_at(i)`` for the i-th of 30."""
    out = []
    for i in range(31):
        seconds_ago = 600 - 20 * i
        if seconds_ago < until_minutes_ago * 60:
            break
        used = used_at(i)
        out.append({"t": (NOW - timedelta(seconds=seconds_ago)).isoformat(),
                    "used_bytes": used, "available_bytes": available_total - used})
    return out


SERVERS = [
    {"name": "node1", "url": "https://10.0.0.1:8441", "status": "running", "admin_state": "online",
     "since": at(58), "used_bytes": int(1.5 * GiB), "available_bytes": 398 * GiB,
     "sampled_at": at(0, 5), "under_replicated": 12},
    {"name": "node2", "url": "https://10.0.0.2:8441", "status": "down", "admin_state": "online",
     "since": at(4), "used_bytes": 820 * MiB, "available_bytes": 120 * GiB,
     "sampled_at": at(4, 10), "under_replicated": 12},
    {"name": "node3", "url": "https://10.0.0.3:8441", "status": "offline", "admin_state": "offline",
     "since": at(25), "used_bytes": 12 * MiB, "available_bytes": int(1.8 * 1024 * GiB),
     "sampled_at": at(0, 3), "under_replicated": 0},
]

STORAGE = {
    "node1": _samples(lambda i: GiB + i * 17 * MiB, int(399.5 * GiB)),
    "node2": _samples(lambda i: 800 * MiB + (i // 5) * 4 * MiB, 120 * GiB + 820 * MiB, until_minutes_ago=4),
    "node3": _samples(lambda i: 12 * MiB, int(1.8 * 1024 * GiB) + 12 * MiB),
}

USERS = [
    {"username": "admin", "email": "admin@example.com", "admin": True, "disabled": False,
     "valid_until": "2036-03-11T12:00:00+00:00", "created": at(60 * 24 * 30),
     "file_count": 0, "total_bytes": 0, "quota_bytes": None},
    {"username": "alice", "email": "alice@example.com", "admin": False, "disabled": False,
     "valid_until": "2026-09-30T00:00:00+00:00", "created": at(60 * 24 * 20),
     "file_count": 4, "total_bytes": 356 * MiB + 12 * KiB, "quota_bytes": GiB},
    {"username": "bob", "email": "bob@example.com", "admin": False, "disabled": False,
     "valid_until": "2026-04-01T00:00:00+00:00", "created": at(60 * 24 * 3),
     "file_count": 1, "total_bytes": 2 * KiB, "quota_bytes": 2 * KiB},
    {"username": "carol", "email": "carol@example.com", "admin": False, "disabled": False,
     "valid_until": "2026-03-01T00:00:00+00:00", "created": at(60 * 24 * 90),
     "file_count": 0, "total_bytes": 0, "quota_bytes": None},
]


def _file(owner, path, size, version, minutes_ago, digest):
    return {"owner": owner, "path": path, "size": size, "digest": digest * 8, "algorithm": "sha256",
            "version": version, "modified": at(minutes_ago), "created": at(minutes_ago + 60),
            "origin": "node1", "under_replicated": False,
            "replicas": [{"server": "node1", "priority": 0}, {"server": "node3", "priority": 1}]}


FILES = {
    "alice": [
        _file("alice", "docs/report.pdf", 2 * MiB + 300 * KiB, 3, 90, "3f2a9c1d"),
        _file("alice", "docs/notes.txt", 12 * KiB, 1, 30, "a1b2c3d4"),
        _file("alice", "photos/2026/harbour.jpg", 4 * MiB, 1, 60 * 24, "77aa00ff"),
        _file("alice", "backup/laptop.tar", 350 * MiB, 2, 60 * 5, "deadbeef"),
    ],
    "bob": [_file("bob", "hello.txt", 2 * KiB, 1, 10, "0badf00d")],
}

EVENTS = [
    {"id": 101, "at": at(26), "kind": "status", "server": "admin", "username": "admin",
     "operation": "offline", "path": "", "result": "ok", "bytes": 0,
     "message": "admin took server node3 offline"},
    {"id": 102, "at": at(9), "kind": "file", "server": "node1", "username": "alice",
     "operation": "create", "path": "alice/docs/notes.txt", "result": "201", "bytes": 12 * KiB,
     "message": ""},
    {"id": 103, "at": at(6), "kind": "acl", "server": "admin", "username": "alice",
     "operation": "grant", "path": "alice/docs/", "result": "reader", "bytes": 0,
     "message": "alice granted reader on alice/docs/ to bob"},
    {"id": 104, "at": at(4), "kind": "status", "server": "admin", "username": "",
     "operation": "", "path": "", "result": "", "bytes": 0,
     "message": "admin: node2 running -> down: missed 3 heartbeats"},
    {"id": 105, "at": at(1), "kind": "file", "server": "node1", "username": "bob",
     "operation": "read", "path": "alice/docs/report.pdf", "result": "403", "bytes": 0,
     "message": "no role on alice/docs/report.pdf"},
]


class FixedAdmin:
    """The AdminClient methods the screens call, answering the fixed data above."""

    url = "https://admin.example.net:8440"

    def __init__(self, *, admin=True, username="admin"):
        self.is_admin, self.username = admin, username
        self.calls = []

    def servers(self):
        self.calls.append("servers")
        return {"replicas": 1, "tls": True, "servers": [dict(s) for s in SERVERS]}

    def storage(self, name, *, since=None, limit=None):
        samples = STORAGE.get(name, [])
        if since:
            start = datetime.fromisoformat(since)
            samples = [s for s in samples if datetime.fromisoformat(s["t"]) >= start]
        return [dict(s) for s in samples]

    def users(self, page_size=1000):
        users = [dict(u) for u in USERS]
        if not self.is_admin:
            for u in users:
                if u["username"] != self.username:
                    for key in ("email", "valid_until", "created", "quota_bytes"):
                        u.pop(key)
        return users

    def users_page(self, *, limit=200, after=None):
        return [u for u in self.users() if not after or u["username"] > after][:limit]

    def user_files(self, username, *, limit=None, after=None):
        if not self.is_admin and username != self.username:
            raise PermissionDenied(403, "forbidden",
                                   "only the owner and administrators see a user's file list")
        files = FILES.get(username, [])
        return {"username": username, "file_count": len(files),
                "total_bytes": sum(f["size"] for f in files), "files": [dict(f) for f in files],
                "next": None}

    def events(self, *, after=None, limit=100):
        if after is None:
            return {"events": [dict(e) for e in EVENTS][-limit:], "next": None}
        rest = [dict(e) for e in EVENTS if e["id"] > after]
        return {"events": rest[:limit], "next": rest[limit - 1]["id"] if len(rest) > limit else None}

    def me(self):
        mine = next(u for u in USERS if u["username"] == self.username)
        return {"username": self.username, "email": f"{self.username}@example.com",
                "admin": self.is_admin, "valid_until": USERS[0]["valid_until"],
                "quota_bytes": mine["quota_bytes"], "used_bytes": mine["total_bytes"],
                "reserved_bytes": 0}

    def files(self, prefix, *, recursive=False, limit=None, after=None):
        return {"files": [], "folders": [], "next": None}

    def shared(self):
        return []

    def close(self):
        pass


def fixed_session(*, admin=True, username="admin", admin_url=FixedAdmin.url):
    """A Session on FixedAdmin (it stands in for the storage client too: nothing is transferred)."""
    admin_client = FixedAdmin(admin=admin, username=username)
    return Session(client=admin_client, admin=admin_client,
                   username=username, is_admin=admin, admin_url=admin_url,
                   usage=admin_client.me())
