"""The GUI's pages as the database builds them, and the connections they go through.

On PostgreSQL a page's rows come as JSON built by the database (admin/rowjson.py), over
autocommit connections whose statements are prepared once (admin/pgprepared.py) and which
are checked without a ping on every checkout (admin/db.py). Each test here holds that to
what the Python formatting and the plain pool gave.
"""
from datetime import datetime, timezone

import pytest
from sqlalchemy import String, cast, create_engine, literal, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import selectinload

from securifile.admin import db
from securifile.admin.acl import AccessControl
from securifile.admin.catalog import Catalog, array_text, file_json
from securifile.admin.events import events_page
from securifile.admin.models import Event, File, Grant, StorageSample, User
from securifile.common.times import iso

from .databases import fresh_postgres_database
from .helpers import wait_for
from .test_admin_db import file_event, new_accounts, report

T0 = 1_700_000_000.0


def test_file_pages_show_each_file_as_file_json_does(sessions):
    """Timestamps at a whole second and with a fraction, replicas out of order and none,
    sizes beyond 32 bits: the database's JSON equals the Python formatting of the rows."""
    catalog = Catalog(sessions)
    catalog.apply_report(report("n1:p", "node1",
        file_event("alice", "d/whole.txt", modified=T0),
        file_event("alice", "d/fraction.txt", modified=T0 + 0.25, size=5 * 2 ** 32,
                   replicas=(("node3", 2), ("node2", 1), ("node4", 1))),
        file_event("alice", "d/tiny.txt", modified=T0 + 0.000001, replicas=()),
        file_event("alice", "d/x'quote\"s.txt", modified=T0 + 1.5)))
    with sessions() as s:
        rows = s.scalars(select(File).where(File.owner == "alice").order_by(File.path)
                         .options(selectinload(File.placements))).all()
        want = [file_json(f, "owner", sorted(
            ({"server": p.server, "priority": p.priority} for p in f.placements),
            key=lambda r: (r["priority"], r["server"]))) for f in rows]
    page = catalog.list_folder("alice", "alice", "d", lambda _p: "owner")
    assert page["files"] == want
    assert [f["modified"] for f in page["files"]] == [
        "2023-11-14T22:13:20.250000+00:00", "2023-11-14T22:13:20.000001+00:00",
        "2023-11-14T22:13:20+00:00", "2023-11-14T22:13:21.500000+00:00"]
    assert catalog.owned_files("alice")["files"] == want
    assert page["files"][0]["replicas"] == [{"server": "node2", "priority": 1},
                                            {"server": "node4", "priority": 1},
                                            {"server": "node3", "priority": 2}]


def test_users_events_and_samples_pages_keep_their_values(sessions):
    accounts, catalog = new_accounts(sessions), Catalog(sessions)
    accounts.create("alice", "alice@example.com", 30, "correct horse battery", admin=True,
                    quota_bytes=2 ** 40)
    accounts.create("bob", "bob@example.com", 30, "correct horse battery")
    catalog.apply_report(report("n1:u", "node1", file_event("alice", "f", size=7)))
    with sessions.begin() as s:
        s.add(Event(at=datetime.fromtimestamp(T0 + 0.5, timezone.utc), kind="access",
                    username="bob", operation="read", path="alice/f", result="ok", size=3,
                    message="it's \"quoted\" \u00e9"))
        s.add(StorageSample(server="node1", t=datetime.fromtimestamp(T0, timezone.utc),
                            used_bytes=2 ** 40, available_bytes=0))
    users = catalog.users()
    with sessions() as s:
        alice = s.scalar(select(User).where(User.username == "alice"))
    assert users[0] == {"username": "alice", "id": alice.uid, "email": "alice@example.com",
                        "admin": True, "disabled": False, "valid_until": iso(alice.valid_until),
                        "created": iso(alice.created_at), "file_count": 1, "total_bytes": 7,
                        "quota_bytes": 2 ** 40}
    assert (users[1]["username"], users[1]["file_count"], users[1]["quota_bytes"]) == \
        ("bob", 0, None)
    page = events_page(db.reading(sessions), None, 10)
    assert page == {"events": [{"id": 1, "at": "2023-11-14T22:13:20.500000+00:00",
                                "kind": "access", "server": "", "username": "bob",
                                "operation": "read", "path": "alice/f", "result": "ok",
                                "bytes": 3, "message": "it's \"quoted\" \u00e9"}],
                    "next": None}
    assert catalog.samples("node1", None) == [
        {"t": "2023-11-14T22:13:20+00:00", "used_bytes": 2 ** 40, "available_bytes": 0}]


# -- PostgreSQL's connections ------------------------------------------------------------------

@pytest.fixture
def pg_engine():
    """An upgraded schema on a fresh PostgreSQL database (what these tests hold is
    PostgreSQL's: SQLite has no server connection, no pool to check, nothing prepared)."""
    url, drop = fresh_postgres_database()
    engine = db.make_engine(url)
    db.upgrade(engine)
    yield engine
    engine.dispose()
    drop()


def last_change(pid, url):
    """When the backend ``pid`` last did anything (a statement changes its state)."""
    watcher = create_engine(url)
    try:
        with watcher.connect() as c:
            return c.execute(text("SELECT state_change FROM pg_stat_activity WHERE pid = :p"),
                             {"p": pid}).scalar()
    finally:
        watcher.dispose()


@pytest.mark.parametrize("pool", ["writing", "reading"])
def test_a_checkout_sends_nothing_and_a_closed_connection_is_replaced(pg_engine, pool):
    engine = pg_engine if pool == "writing" else pg_engine.reading
    url = engine.url.render_as_string(hide_password=False)
    with engine.connect() as c:
        pid = c.execute(text("SELECT pg_backend_pid() AS mine")).scalar()
    before = last_change(pid, url)
    for _ in range(3):
        with engine.connect():
            pass  # a checkout and a checkin: no ping goes to the server
    assert last_change(pid, url) == before
    killer = create_engine(url, isolation_level="AUTOCOMMIT")
    with killer.connect() as c:
        c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        wait_for(lambda: c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"),
                                   {"p": pid}).scalar() == 0, what="the backend to end")
    killer.dispose()
    # The server closed that connection (as on a restart): the next checkout sees it
    # without a round trip and the pool opens another; the statement runs.
    with engine.connect() as c:
        assert c.execute(text("SELECT pg_backend_pid()")).scalar() != pid


def test_prepared_reads_survive_a_change_of_the_schema(pg_engine):
    """A statement prepared before a column's type changed fails once on the server
    ('cached plan must not change result type'); it is prepared again, not an error."""
    sessions = db.session_factory(pg_engine)
    acl = AccessControl(sessions)
    with sessions.begin() as s:
        s.add(Grant(owner="alice", path="docs/", grantee="bob", role="reader",
                    granted_by="alice", created_at=datetime.now(timezone.utc)))
    for _ in range(3):  # the same connection: the pool hands the last one back
        assert acl.role_function("bob", "alice")("docs/a.txt") == "reader"
    with sessions.begin() as s:
        s.execute(text("ALTER TABLE grants ALTER COLUMN role TYPE text"))
    assert acl.role_function("bob", "alice")("docs/a.txt") == "reader"
    assert acl.shared_with("bob") == [{"owner": "alice", "path": "docs/", "role": "reader"}]


def test_an_array_sent_as_text_comes_back_as_the_same_values(pg_engine):
    values = ["a", 'quote " inside', "back\\slash", "comma, {braces}", "NULL", "", " spaced ",
              "\u00e9t\u00e9/\u6587\u4ef6.txt"]
    with pg_engine.reading.connect() as c:
        got = c.execute(select(cast(literal(array_text(values), String), ARRAY(String)))).scalar()
    assert got == values


def test_a_sharee_sees_exactly_the_files_shared_whatever_their_names(sessions):
    names = ['s/a "quoted".txt', "s/back\\slash.txt", "s/comma, {x}.txt", "s/NULL"]
    catalog = Catalog(sessions)
    catalog.apply_report(report("n1:s", "node1", *[file_event("alice", p) for p in
                                                    names + ["s/other.txt"]]))
    roles = lambda p: "reader" if p in names else None  # noqa: E731
    page = catalog.list_folder("bob", "alice", "s", roles, grant_paths=names)
    assert [f["path"] for f in page["files"]] == sorted(names)
