"""Deterministic stand-ins at the network boundary for the TUI's snapshot and paging tests.

``FakeAdmin`` answers the AdminClient calls the Files and Sharing screens make, from fixed
in-memory data, with the same shapes and paging rules as the admin server.
"""
import hashlib
import time
from datetime import timezone

from textual import events
from textual.app import App

from securifile.tui.errors import ErrorReports
from securifile.tui.screens.files import FilesScreen
from securifile.tui.screens.sharing import SharingScreen
from securifile.tui.session import Session

UTC = timezone.utc


def record(owner, path, size, *, version=1, modified="2026-11-20T09:30:00+00:00",
           origin="node1", replicas=("node2",), role="owner", digest=None):
    return {"owner": owner, "path": path, "size": size,
            "digest": digest or hashlib.sha256(f"{owner}/{path}".encode()).hexdigest(),
            "algorithm": "sha256", "version": version, "modified": modified,
            "created": "2026-11-01T08:00:00+00:00", "origin": origin,
            "under_replicated": not replicas,
            "replicas": [{"server": s, "priority": i + 1} for i, s in enumerate(replicas)],
            "role": role}


class FakeAdmin:
    """The AdminClient methods the screens call, over fixed data; records grant changes."""

    def __init__(self, files=(), shared=(), grants=None, users=()):
        self.records = {f"{r['owner']}/{r['path']}": r for r in files}
        self._shared = list(shared)
        self._grants = {k: list(v) for k, v in (grants or {}).items()}
        self._users = list(users)
        self.calls = []
        self.failures = {}  # method name -> the exception it raises

    def _maybe_fail(self, name):
        if name in self.failures:
            raise self.failures[name]

    def files(self, prefix, *, recursive=False, limit=None, after=None):
        self.calls.append(("files", prefix, limit, after))
        self._maybe_fail("files")
        owner, _, folder = prefix.rstrip("/").partition("/")
        lead = f"{folder}/" if folder else ""
        inside = sorted((r for r in self.records.values()
                         if r["owner"] == owner and r["path"].startswith(lead)),
                        key=lambda r: r["path"])
        direct = inside if recursive else [r for r in inside if "/" not in r["path"][len(lead):]]
        if after:
            direct = [r for r in direct if r["path"] > after]
        limit = limit or 500
        page, more = direct[:limit], len(direct) > limit
        folders = []
        if not recursive and after is None:
            folders = sorted({lead + r["path"][len(lead):].split("/", 1)[0]
                              for r in inside if "/" in r["path"][len(lead):]})
        return {"owner": owner, "folder": folder, "files": [dict(r) for r in page],
                "folders": folders, "next": page[-1]["path"] if more else None}

    def shared(self):
        self.calls.append(("shared", None, None, None))
        return list(self._shared)

    def grants(self, target):
        owner, _, path = target.partition("/")
        return {"owner": owner, "path": path, "grants": list(self._grants.get(target, []))}

    def grant(self, target, username, role):
        grants = self._grants.setdefault(target, [])
        grants[:] = [g for g in grants if g["username"] != username]
        grants.append({"username": username, "role": role, "granted_by": "alice"})

    def revoke(self, target, username):
        self._grants[target] = [g for g in self._grants.get(target, [])
                                if g["username"] != username]

    def users(self):
        return [{"username": u} for u in self._users]


class FakeEvents:
    """``AdminClient.events`` over a list that tests append to, paged as the admin server
    pages (newest ``limit`` without ``after``; else the first ``limit`` after it, ``next``
    while more follow); records each call's (after, limit)."""

    def __init__(self):
        self.log = []
        self.calls = []

    def add(self, count, user="alice"):
        for _ in range(count):
            eid = len(self.log) + 1
            self.log.append({"id": eid, "at": "2026-11-20T09:30:00+00:00", "kind": "access",
                             "server": "node1", "username": user, "operation": "read",
                             "path": f"{user}/file-{eid}.txt", "result": "ok", "bytes": 0,
                             "message": ""})

    def events(self, *, after=None, limit=100):
        self.calls.append((after, limit))
        if after is None:
            return {"events": [dict(e) for e in self.log[-limit:]], "next": None}
        rest = [e for e in self.log if e["id"] > after]
        page = [dict(e) for e in rest[:limit]]
        return {"events": page, "next": page[-1]["id"] if len(rest) > limit else None}


def alice_admin():
    """Alice's namespace, two grants to her, and grants she gave on docs/."""
    files = [
        record("alice", "report-2026.pdf", 2_516_582, version=3, replicas=("node3",)),
        record("alice", "notes.txt", 1_234, modified="2026-11-23T17:45:10+00:00",
               origin="node2", replicas=("node1",)),
        record("alice", "backup-of-the-whole-laptop-before-the-move.tar.gz", 7_400_000_000,
               version=2, origin="node3", replicas=()),
        record("alice", "empty.log", 0, replicas=("node1",)),
        record("alice", "docs/plan.md", 4_096),
        record("alice", "docs/minutes/2026-11-02.md", 2_048),
        record("alice", "photos/beach.jpg", 3_500_000),
        record("bob", "projects/site/index.html", 9_000, role="editor"),
        record("carol", "budget.xlsx", 52_000, role="reader"),
    ]
    shared = [{"owner": "bob", "path": "projects/", "role": "editor"},
              {"owner": "carol", "path": "budget.xlsx", "role": "reader"}]
    grants = {"alice/docs/": [{"username": "bob", "role": "editor", "granted_by": "alice"},
                              {"username": "carol", "role": "reader", "granted_by": "alice"}],
              "bob/projects/": [{"username": "alice", "role": "editor", "granted_by": "bob"},
                                {"username": "dave", "role": "master", "granted_by": "bob"}]}
    return FakeAdmin(files, shared, grants, users=["admin", "alice", "bob", "carol", "dave"])


def fake_session(admin, username="alice"):
    return Session(client=None, admin=admin, username=username, is_admin=False,
                   admin_url="https://admin.example:8440")


async def until(pilot, predicate, timeout=20.0, what="the screen"):
    """Let the app run until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def type_ahead(app, keys):
    """Queue every key at once, as a terminal delivers a paste or a password manager's typing:
    the app reads them all before it handles the first (``pilot.press`` waits after each)."""
    for key in keys:
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(app)
        app.post_message(event)


class FilesApp(ErrorReports, App):
    """A minimal app around the Files screen, as the real app shell pushes it (with the
    shell's error reports, which the screen's polls use)."""

    TITLE = "SecuriFile"

    def __init__(self, session, local_dir=None, tz=UTC, poll_seconds=None):
        super().__init__()
        self.session, self.local_dir, self.tz = session, local_dir, tz
        self.poll_seconds = poll_seconds  # None: the folder is read again on ctrl+r only

    def on_mount(self):
        self.push_screen(FilesScreen(self.session, local_dir=self.local_dir, tz=self.tz,
                                     poll_seconds=self.poll_seconds))


class SharingApp(App):
    """A minimal app showing only the Sharing dialog for one target."""

    TITLE = "SecuriFile"

    def __init__(self, session, target, role=None):
        super().__init__()
        self.session, self.target, self.role = session, target, role

    def on_mount(self):
        self.push_screen(SharingScreen(self.session, self.target, role=self.role))
