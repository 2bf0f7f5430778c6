"""Tier 1: the admin server's database logic, run on SQLite and on a real PostgreSQL.

Every test takes ``sessions`` (a fresh, upgraded schema on each backend): migrations,
accounts and login, the file catalogue fed by node reports, and server status aggregation.
"""
import threading
import time
from datetime import datetime, timedelta, timezone

import bcrypt
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, func, inspect, select, text

from securifile.admin import accounts as accounts_module
from securifile.admin import db
from securifile.admin.accounts import Accounts, LoginThrottle
from securifile.admin.acl import AccessControl
from securifile.admin.catalog import Catalog
from securifile.admin.events import events_page
from securifile.admin.models import (
    AppliedReport, Base, Event, File, Folder, Grant, Observation, OwnerUsage, Placement, Server,
    RevokedCredential, StatusChange, StorageSample, User)
from securifile.admin.servers import DOWN, FAILED, RUNNING, UNKNOWN, ServerRegistry, aggregate
from securifile.common.config import ServerEntry
from securifile.common.errors import ApiError

from .fakes import Clock, at_once

T0 = 1_700_000_000.0
PASSWORD = "correct horse battery"
TABLES = {"users", "files", "folders", "owner_usage", "placements", "grants", "servers",
          "observations", "status_history", "storage_samples", "events", "applied_reports",
          "enrolments", "memberships", "witness_leases"}


def new_accounts(sessions, clock=None, rounds=4):
    return Accounts(sessions, clock or (lambda: datetime.now(timezone.utc)), bcrypt_rounds=rounds)


def file_event(owner, path, version=1, size=10, digest=None, modified=None, origin="node1",
               replicas=(("node2", 1),), deleted=False):
    return {"type": "file", "record": {
        "owner": owner, "path": path, "origin": origin, "digest": digest or f"d{version}-{path}",
        "algorithm": "sha256", "size": 0 if deleted else size, "version": version,
        "replicas": [{"server": s, "priority": p} for s, p in replicas],
        "modified": T0 + version if modified is None else modified, "deleted": deleted}}


def report(rid, server, *events):
    return {"id": rid, "server": server, "events": list(events)}


def usage(sessions, owner):
    with sessions() as s:
        row = s.get(OwnerUsage, owner)
        return (row.file_count, row.total_bytes) if row else (0, 0)


def snapshot(sessions):
    """Everything a report can change, as comparable plain values."""
    with sessions() as s:
        return {
            "files": sorted((f.owner, f.path, f.size, f.digest, f.version, f.origin)
                            for f in s.scalars(select(File))),
            "placements": sorted((p.file_id, p.server, p.priority) for p in s.scalars(select(Placement))),
            "folders": sorted((f.owner, f.path, f.parent) for f in s.scalars(select(Folder))),
            "usage": sorted((u.owner, u.file_count, u.total_bytes) for u in s.scalars(select(OwnerUsage))),
            "samples": s.scalar(select(func.count()).select_from(StorageSample)),
            "history": s.scalar(select(func.count()).select_from(StatusChange)),
        }


def register(sessions, *names):
    registry = ServerRegistry(sessions)
    registry.register([ServerEntry(n, f"https://127.0.0.1:{8441 + i}") for i, n in enumerate(names)])
    return registry


# -- migrations ----------------------------------------------------------------------------


def test_migrations_create_the_schema_and_upgrade_again_changes_nothing(db_url):
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine)
        insp = inspect(engine)
        assert TABLES <= set(insp.get_table_names())
        assert "ix_files_owner_folder_path" in {i["name"] for i in insp.get_indexes("files")}
        assert "ix_storage_samples_server_t" in {i["name"] for i in insp.get_indexes("storage_samples")}
        with engine.connect() as c:
            head = c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            # The migrations build exactly what the models describe (no drift either way).
            assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
            if engine.dialect.name == "postgresql":
                collation = c.execute(text(
                    "SELECT collation_name FROM information_schema.columns "
                    "WHERE table_name = 'files' AND column_name = 'path'")).scalar()
                assert collation == "C"  # byte-wise, so a folder is one index range
        sessions = db.session_factory(engine)
        new_accounts(sessions).create("keeper", "keeper@example.com", 10, PASSWORD)
        db.upgrade(engine)
        with engine.connect() as c:
            assert c.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == head
        assert new_accounts(sessions).get("keeper") is not None
    finally:
        engine.dispose()


def test_the_under_replicated_index_holds_only_files_that_lack_copies(db_url):
    """The servers listing counts under-replicated files by origin and by replica: the index
    (migration 0011) holds only those files, with origin and id, so the counts read it alone
    and cost the same with a million files as with a thousand."""
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine)
        with engine.connect() as c:
            if engine.dialect.name == "postgresql":
                ddl = c.execute(text("SELECT indexdef FROM pg_indexes "
                                     "WHERE indexname = 'ix_files_under_replicated'")).scalar()
            else:
                ddl = c.execute(text("SELECT sql FROM sqlite_master "
                                     "WHERE name = 'ix_files_under_replicated'")).scalar()
        assert "(origin, id)" in ddl and "WHERE under_replicated" in ddl, ddl
    finally:
        engine.dispose()


# -- accounts ------------------------------------------------------------------------------


def test_create_stores_a_bcrypt_hash_never_the_password(sessions):
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    new = new_accounts(sessions, Clock(now)).create("bob", "Bob@Example.COM", 30, PASSWORD)
    assert new.enrolment_code is None  # a password was given: nothing to enrol
    with sessions() as s:
        row = s.scalar(select(User).where(User.username == "bob"))
        raw = s.execute(text("SELECT * FROM users")).all()
    assert row.password_hash.startswith("$2b$") and PASSWORD not in row.password_hash
    assert bcrypt.checkpw(PASSWORD.encode(), row.password_hash.encode())
    assert not any(PASSWORD in str(v) for r in raw for v in r)
    assert row.email == "bob@example.com"
    assert accounts_module.aware(row.valid_until) == now + timedelta(days=30)
    assert not row.admin and not row.disabled


def test_without_a_password_the_account_enrols_with_a_code(sessions):
    accounts = new_accounts(sessions)
    new = accounts.create("gen", "gen@example.com", 1)
    assert new.enrolment_code and len(new.enrolment_code) >= 32
    with pytest.raises(ApiError) as e:  # no password works before enrolment
        accounts.authenticate("gen", "anything at all 123", "10.0.0.1")
    assert e.value.status == 401
    assert accounts.enrol("gen", new.enrolment_code, PASSWORD).username == "gen"
    assert accounts.authenticate("gen", PASSWORD, "10.0.0.1").username == "gen"


def test_duplicate_user_name_or_email_is_a_conflict(sessions):
    accounts = new_accounts(sessions)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    with pytest.raises(ApiError) as same_name:
        accounts.create("bob", "other@example.com", 30, PASSWORD)
    with pytest.raises(ApiError) as same_email:
        accounts.create("robert", "BOB@example.com", 30, PASSWORD)
    for e in (same_name.value, same_email.value):
        assert (e.status, e.code) == (409, "user_exists")
    assert "user name" in same_name.value.message and "e-mail" in same_email.value.message
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1


BAD_ACCOUNTS = [
    (dict(password="short"), "weak_password"),
    (dict(password="x" * 73), "password_too_long"),
    (dict(email="not-an-address"), "invalid_email"),
    (dict(email="a@b@c"), "invalid_email"),
    (dict(valid_days=0), "invalid_validity"),
    (dict(username="Bob"), "invalid_username"),
]


def test_bad_account_input_is_a_400_and_stores_nothing(sessions):
    accounts = new_accounts(sessions)
    for kwargs, code in BAD_ACCOUNTS:
        args = dict(username="bob", email="bob@example.com", valid_days=30, password=PASSWORD)
        args.update(kwargs)
        with pytest.raises(ApiError) as e:
            accounts.create(**args)
        assert (e.value.status, e.value.code) == (400, code), kwargs
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 0


def test_login_by_user_name_or_by_email(sessions):
    accounts = new_accounts(sessions)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    assert accounts.authenticate("bob", PASSWORD, "10.0.0.1").username == "bob"
    assert accounts.authenticate("Bob@Example.com", PASSWORD, "10.0.0.1").username == "bob"


def test_wrong_password_and_unknown_user_get_the_same_401(sessions):
    accounts = new_accounts(sessions)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    errors = []
    for login, password in (("bob", "wrong password"), ("nobody", PASSWORD),
                            ("nobody@example.com", PASSWORD), ("bob", PASSWORD + "x" * 60)):
        with pytest.raises(ApiError) as e:
            accounts.authenticate(login, password, "10.0.0.1")
        errors.append((e.value.status, e.value.code, e.value.message))
    assert set(errors) == {(401, "bad_credentials", "wrong user name or password")}


def test_expired_account_is_refused_with_a_message_that_says_so(sessions):
    clock = Clock(datetime(2030, 1, 1, tzinfo=timezone.utc))
    accounts = new_accounts(sessions, clock)
    accounts.create("bob", "bob@example.com", 1, PASSWORD)
    clock.advance(hours=23)
    assert accounts.authenticate("bob", PASSWORD, "10.0.0.1")
    clock.advance(hours=2)
    with pytest.raises(ApiError) as e:
        accounts.authenticate("bob", PASSWORD, "10.0.0.1")
    assert (e.value.status, e.value.code) == (403, "account_expired")
    assert "expired" in e.value.message and "2030-01-02" in e.value.message
    # A wrong password on an expired account says nothing about the account.
    with pytest.raises(ApiError) as e:
        accounts.authenticate("bob", "wrong password", "10.0.0.1")
    assert (e.value.status, e.value.code) == (401, "bad_credentials")


def test_disabled_account_is_refused_until_enabled(sessions):
    accounts = new_accounts(sessions)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    accounts.set_disabled("bob", True)
    with pytest.raises(ApiError) as e:
        accounts.authenticate("bob", PASSWORD, "10.0.0.1")
    assert (e.value.status, e.value.code) == (403, "account_disabled")
    assert "disabled" in e.value.message
    accounts.set_disabled("bob", False)
    assert accounts.authenticate("bob", PASSWORD, "10.0.0.1").username == "bob"


def failed_login(accounts, login, address):
    with pytest.raises(ApiError) as e:
        accounts.authenticate(login, "wrong password", address)
    assert e.value.status == 401


def assert_throttled(accounts, login, address):
    with pytest.raises(ApiError) as e:
        accounts.authenticate(login, PASSWORD, address)
    assert (e.value.status, e.value.code) == (429, "too_many_attempts")
    wait = int(e.value.headers["Retry-After"])
    assert 0 < wait <= accounts.throttle.window + 1
    return wait


def test_failed_logins_are_limited_per_account(sessions):
    accounts = new_accounts(sessions)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    clock = Clock(1000.0)
    accounts.throttle = LoginThrottle(limit=5, window=300.0, clock=clock)
    for i in range(5):  # from five addresses: only the account ties them together
        failed_login(accounts, "bob" if i % 2 else "bob@example.com", f"10.0.0.{i}")
    wait = assert_throttled(accounts, "bob", "10.0.1.1")  # even with the right password
    assert_throttled(accounts, "BOB@example.com", "10.0.1.2")  # by name or e-mail alike
    clock.advance(seconds=wait)
    assert accounts.authenticate("bob", PASSWORD, "10.0.1.1").username == "bob"


def test_failed_logins_are_limited_per_address(sessions):
    accounts = new_accounts(sessions)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    clock = Clock(1000.0)
    accounts.throttle = LoginThrottle(limit=5, window=300.0, clock=clock)
    for i in range(5):  # five different (unknown) accounts from one address
        failed_login(accounts, f"guess{i}", "10.9.9.9")
    assert_throttled(accounts, "bob", "10.9.9.9")
    assert accounts.authenticate("bob", PASSWORD, "10.0.0.1").username == "bob"
    clock.advance(seconds=301)
    assert accounts.authenticate("bob", PASSWORD, "10.9.9.9").username == "bob"
    # Nothing is kept for long about names and addresses that failed once, long ago.
    for i in range(100):
        accounts.throttle.check(("login", f"made-up-{i}"), ("address", f"10.8.0.{i}"))
    assert not [k for k in accounts.throttle._failures if "made-up" in k[1] or "10.8.0." in k[1]]
    throttle = LoginThrottle(limit=5, window=300.0, clock=clock, sweep_above=10)
    for i in range(10):
        throttle.failed(("account", f"sprayed-{i}"))
    clock.advance(seconds=301)
    throttle.failed(("account", "latest"))
    assert list(throttle._failures) == [("account", "latest")]


def test_unknown_user_costs_one_bcrypt_check_like_a_known_one(sessions, monkeypatch):
    accounts = new_accounts(sessions, rounds=9)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    stored = accounts.get("bob").password_hash
    # The dummy hash has the same cost as real ones, so checking against it takes as long.
    assert accounts._dummy_hash.decode()[:7] == stored[:7] == "$2b$09$"
    checked = []
    real_checkpw = bcrypt.checkpw

    def spy(password, hashed):
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(accounts_module.bcrypt, "checkpw", spy)

    def duration(login, address):
        start = time.perf_counter()
        with pytest.raises(ApiError) as e:
            accounts.authenticate(login, "wrong password", address)
        assert e.value.status == 401
        return time.perf_counter() - start

    unknown, known = [], []
    for i in range(5):  # interleaved, so that a busy machine slows both alike
        unknown.append(duration("nobody", f"10.1.0.{i}"))
        known.append(duration("bob", f"10.2.0.{i}"))
    assert checked == [accounts._dummy_hash, stored.encode()] * 5
    # The fastest of each: what the check itself costs (a busy machine only adds to it, and
    # the medians of five can each land on a different burst of load).
    ratio = min(unknown) / min(known)
    assert 0.5 < ratio < 2.0, (unknown, known)


def test_removing_a_user_drops_their_grants(sessions):
    accounts = new_accounts(sessions)
    for name in ("alice", "bob"):
        accounts.create(name, f"{name}@example.com", 30, PASSWORD)
    AccessControl(sessions).grant("alice", "alice", "docs/", "bob", "reader")
    accounts.remove("bob")
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Grant)) == 0
    with pytest.raises(ApiError) as e:
        accounts.remove("bob")
    assert e.value.status == 404



def test_the_same_grant_or_revocation_made_twice_at_once_is_stored_once(sessions):
    """Two requests (or two admin instances) making the same grant, or revoking the same
    credential, at the same moment: each read no row and inserted one, and the second
    failed on the unique key (a 500). Raced twelve times each."""
    accounts = new_accounts(sessions)
    for name in ("alice", "bob"):
        accounts.create(name, f"{name}@example.com", 30, PASSWORD)
    first, second = AccessControl(sessions), AccessControl(sessions)
    for i in range(12):
        path = f"docs/{i}/"
        assert at_once(lambda: first.grant("alice", "alice", path, "bob", "reader"),
                       lambda: second.grant("alice", "alice", path, "bob", "editor")) == []
        assert [g["role"] for g in first.list_grants("alice", path)] in (["reader"],
                                                                            ["editor"])
        credential = f"jti-{i}"
        assert at_once(lambda: accounts.revoke_credential("u1", credential, T0),
                       lambda: accounts.revoke_credential("u1", credential, T0)) == []
        with sessions() as s:
            assert s.get(RevokedCredential, credential).uid == "u1"


# -- the catalogue: reports ----------------------------------------------------------------


def test_a_report_applied_twice_changes_nothing(sessions):
    register(sessions, "node1", "node2")
    catalog = Catalog(sessions)
    r = report("node1:1-3", "node1", file_event("alice", "docs/a.txt", size=7),
               file_event("alice", "b.txt", size=5),
               {"type": "sample", "t": T0, "used": 12, "available": 1000})
    assert catalog.apply_report(r) is True
    before = snapshot(sessions)
    assert before["usage"] == [("alice", 2, 12)] and before["samples"] == 1
    assert catalog.apply_report(r) is False
    assert snapshot(sessions) == before
    # The same events resent in a batch with another id (more events had queued up).
    assert catalog.apply_report(dict(r, id="node1:1-4")) is True
    assert snapshot(sessions) == before


def test_an_older_version_never_overwrites_a_newer_one(sessions):
    catalog = Catalog(sessions)
    catalog.apply_report(report("n2:1", "node2", file_event("alice", "f.txt", version=2, size=20)))
    catalog.apply_report(report("n1:1", "node1", file_event("alice", "f.txt", version=1, size=10)))
    f = catalog.file("alice", "f.txt")
    assert (f.version, f.size, f.digest) == (2, 20, "d2-f.txt")
    assert usage(sessions, "alice") == (1, 20)
    catalog.apply_report(report("n1:2", "node1", file_event("alice", "f.txt", version=3, size=8,
                                                            replicas=(("node3", 1),))))
    f = catalog.file("alice", "f.txt")
    assert (f.version, f.size, [p.server for p in f.placements]) == (3, 8, ["node3"])
    assert usage(sessions, "alice") == (1, 8)


def test_a_late_report_of_an_older_version_does_not_bring_a_deleted_file_back(sessions):
    catalog = Catalog(sessions)
    catalog.apply_report(report("n2:1", "node2", file_event("alice", "f.txt", version=2, deleted=True)))
    catalog.apply_report(report("n1:1", "node1", file_event("alice", "f.txt", version=1)))
    assert catalog.file("alice", "f.txt") is None


def test_deletion_removes_the_file_prunes_empty_folders_and_fixes_usage(sessions):
    catalog = Catalog(sessions)
    catalog.apply_report(report("n1:1-3", "node1",
                                file_event("alice", "a/b/c/x.txt", size=100),
                                file_event("alice", "a/y.txt", size=10),
                                file_event("bob", "a/b/z.txt", size=1)))
    with sessions() as s:
        folders = sorted((f.owner, f.path) for f in s.scalars(select(Folder)))
    assert folders == [("alice", "a"), ("alice", "a/b"), ("alice", "a/b/c"), ("bob", "a"), ("bob", "a/b")]
    assert usage(sessions, "alice") == (2, 110)
    catalog.apply_report(report("n1:4", "node1", file_event("alice", "a/b/c/x.txt", version=2, deleted=True)))
    assert catalog.file("alice", "a/b/c/x.txt") is None
    with sessions() as s:
        folders = sorted((f.owner, f.path) for f in s.scalars(select(Folder)))
        placements = s.scalar(select(func.count()).select_from(Placement))
    assert folders == [("alice", "a"), ("bob", "a"), ("bob", "a/b")]
    assert placements == 2  # y.txt's and z.txt's replica rows; x.txt's went with it
    assert usage(sessions, "alice") == (1, 10) and usage(sessions, "bob") == (1, 1)
    catalog.apply_report(report("n1:5", "node1", file_event("alice", "a/y.txt", version=2, deleted=True),
                                file_event("alice", "never/was.txt", version=2, deleted=True)))
    with sessions() as s:
        assert [f.owner for f in s.scalars(select(Folder))] == ["bob", "bob"]
    assert usage(sessions, "alice") == (0, 0)
    listing = catalog.list_folder("alice", "alice", "", lambda p: "owner")
    assert listing["files"] == [] and listing["folders"] == []


def test_reconcile_usage_recounts_from_the_files(sessions):
    catalog = Catalog(sessions)
    catalog.apply_report(report("n1:1", "node1", file_event("alice", "x", size=3),
                                file_event("alice", "y", size=4), file_event("bob", "z", size=5)))
    with sessions.begin() as s:
        s.get(OwnerUsage, "alice").file_count = 99
    catalog.reconcile_usage()
    assert usage(sessions, "alice") == (2, 7) and usage(sessions, "bob") == (1, 5)


def hold_row_then_commit(sessions, row, apply, table):
    """Run ``apply`` in a thread while another transaction holds an uncommitted ``row``
    with the same key, and commit that once the thread inserts into ``table`` (SQLite: once
    it writes at all, as writers queue there): the race of two requests at once."""
    engine = sessions.kw["bind"]
    reached = threading.Event()
    result = {}
    if engine.dialect.name == "sqlite":
        table = ""

    def watch(conn, cursor, statement, *args):
        if threading.current_thread().name == "racer" and \
                " ".join(statement.split()).upper().startswith(f"INSERT INTO {table}".upper()):
            reached.set()

    holder = sessions()
    holder.begin()
    holder.add(row)
    holder.flush()
    event.listen(engine, "before_cursor_execute", watch)
    try:
        def run():
            try:
                result["value"] = apply()
            except Exception as e:  # the test reports it
                result["error"] = e

        racer = threading.Thread(target=run, name="racer")
        racer.start()
        assert reached.wait(30), "the racing transaction never tried to insert"
        holder.commit()
        racer.join(60)
        assert not racer.is_alive()
    finally:
        event.remove(engine, "before_cursor_execute", watch)
        holder.close()
    assert "error" not in result, repr(result.get("error"))
    return result["value"]


def test_the_same_report_applied_concurrently_is_applied_once(sessions):
    catalog = Catalog(sessions)
    r = report("node1:7-9", "node1", {"type": "sample", "t": T0, "used": 1, "available": 2})
    done = hold_row_then_commit(
        sessions, AppliedReport(id=r["id"], server="node1", at=datetime.now(timezone.utc)),
        lambda: catalog.apply_report(r), "applied_reports")
    assert done is False


def test_two_first_reports_for_one_owner_at_once_both_count(sessions):
    catalog = Catalog(sessions)
    r = report("node2:1", "node2", file_event("carol", "new.txt", size=9))
    done = hold_row_then_commit(sessions, OwnerUsage(owner="carol", file_count=1, total_bytes=1),
                                lambda: catalog.apply_report(r), "owner_usage")
    assert done is True
    assert usage(sessions, "carol") == (2, 10)


# -- the catalogue: queries ----------------------------------------------------------------


def owner_role(path):
    return "owner"


def paths(listing):
    return [f["path"] for f in listing["files"]]


def load_tree(catalog):
    names = ["docs/a.txt", "docs/b.txt", "docs/sub/c.txt", "docs/sub/deeper/d.txt",
             "docs0.txt", "docs-x/e.txt", "docs.txt", "private/p.txt", "top.txt"]
    catalog.apply_report(report("n1:tree", "node1", *[file_event("alice", p) for p in names],
                                file_event("bob", "docs/a.txt")))


def test_listing_direct_children_or_everything_below(sessions):
    catalog = Catalog(sessions)
    load_tree(catalog)
    docs = catalog.list_folder("alice", "alice", "docs", owner_role)
    assert paths(docs) == ["docs/a.txt", "docs/b.txt"]
    assert docs["folders"] == ["docs/sub"] and docs["next"] is None
    assert {f["role"] for f in docs["files"]} == {"owner"}
    below = catalog.list_folder("alice", "alice", "docs/", owner_role, recursive=True)
    assert paths(below) == ["docs/a.txt", "docs/b.txt", "docs/sub/c.txt", "docs/sub/deeper/d.txt"]
    root = catalog.list_folder("alice", "alice", "", owner_role)
    assert paths(root) == ["docs.txt", "docs0.txt", "top.txt"]
    assert root["folders"] == ["docs", "docs-x", "private"]
    assert len(paths(catalog.list_folder("alice", "alice", "", owner_role, recursive=True))) == 9
    a = docs["files"][0]
    assert (a["owner"], a["size"], a["version"], a["origin"], a["replicas"]) == \
        ("alice", 10, 1, "node1", [{"server": "node2", "priority": 1}])


def test_paging_with_after_and_next(sessions):
    catalog = Catalog(sessions)
    catalog.apply_report(report("n1:p", "node1", *[file_event("alice", f"big/{i:02}.bin") for i in range(7)],
                                file_event("alice", "big/sub/x.bin")))
    seen, after, pages = [], None, 0
    while True:
        page = catalog.list_folder("alice", "alice", "big", owner_role, limit=3, after=after)
        pages += 1
        assert len(page["files"]) <= 3
        assert page["folders"] == (["big/sub"] if after is None else [])
        seen += paths(page)
        if page["next"] is None:
            break
        assert page["next"] == paths(page)[-1]
        after = page["next"]
    assert pages == 3 and seen == [f"big/{i:02}.bin" for i in range(7)]
    deep = catalog.list_folder("alice", "alice", "big", owner_role, limit=4, recursive=True)
    rest = catalog.list_folder("alice", "alice", "big", owner_role, limit=4, recursive=True,
                               after=deep["next"])
    assert paths(deep) + paths(rest) == seen + ["big/sub/x.bin"] and rest["next"] is None


def test_a_non_owner_sees_only_what_was_granted(sessions):
    accounts, acl, catalog = new_accounts(sessions), AccessControl(sessions), Catalog(sessions)
    for name in ("alice", "bob", "carol"):
        accounts.create(name, f"{name}@example.com", 30, PASSWORD)
    load_tree(catalog)
    acl.grant("alice", "alice", "docs/sub/", "bob", "reader")
    acl.grant("alice", "alice", "docs/a.txt", "bob", "editor")

    def listing(caller, folder, **kw):
        return catalog.list_folder(caller, "alice", folder,
                                   lambda p: acl.role(caller, "alice", p), **kw)

    root = listing("bob", "")
    assert paths(root) == [] and root["folders"] == ["docs"]
    docs = listing("bob", "docs")
    assert [(f["path"], f["role"]) for f in docs["files"]] == [("docs/a.txt", "editor")]
    assert docs["folders"] == ["docs/sub"]
    below = listing("bob", "docs", recursive=True)
    assert [(f["path"], f["role"]) for f in below["files"]] == [
        ("docs/a.txt", "editor"), ("docs/sub/c.txt", "reader"), ("docs/sub/deeper/d.txt", "reader")]
    assert paths(listing("bob", "", recursive=True)) == paths(below)
    assert paths(listing("carol", "", recursive=True)) == [] and listing("carol", "")["folders"] == []
    acl.grant("alice", "alice", "docs/", "carol", "reader")
    assert paths(listing("carol", "docs")) == ["docs/a.txt", "docs/b.txt"]
    assert listing("carol", "")["folders"] == ["docs"]
    assert len(paths(listing("carol", "", recursive=True))) == 4  # not private/, docs0.txt, ...


def test_role_function_answers_as_role_does_for_every_kind_of_grant(sessions):
    accounts, acl = new_accounts(sessions), AccessControl(sessions)
    for name in ("alice", "bob", "carol"):
        accounts.create(name, f"{name}@example.com", 30, PASSWORD)
    acl.grant("alice", "alice", "docs/", "bob", "reader")
    acl.grant("alice", "alice", "docs/a.txt", "bob", "master")
    acl.grant("alice", "alice", "docs/sub/", "bob", "editor")
    acl.grant("alice", "alice", "docs", "bob", "editor")  # a file named like the folder
    acl.grant("alice", "alice", "", "carol", "reader")
    acl.grant("alice", "alice", "x/y.txt", "carol", "editor")
    probes = ["", "docs", "docs/", "docs/a.txt", "docs/b.txt", "docs/sub/", "docs/sub/c.txt",
              "docs0.txt", "docsx/", "x/y.txt", "x/", "y.txt"]
    for caller in ("alice", "bob", "carol"):
        role_of = acl.role_function(caller, "alice")
        assert [role_of(p) for p in probes] == [acl.role(caller, "alice", p) for p in probes]
    bob = acl.role_function("bob", "alice")
    assert [bob(p) for p in ("docs/a.txt", "docs/sub/c.txt", "docs/b.txt", "docs0.txt")] == [
        "master", "editor", "reader", None]


def test_users_with_their_totals_and_owned_files(sessions):
    accounts, catalog = new_accounts(sessions), Catalog(sessions)
    for name in ("alice", "bob"):
        accounts.create(name, f"{name}@example.com", 30, PASSWORD)
    catalog.apply_report(report("n1:u", "node1", *[file_event("alice", f"f{i}", size=i) for i in range(5)]))
    users = {u["username"]: u for u in catalog.users()}
    assert (users["alice"]["file_count"], users["alice"]["total_bytes"]) == (5, 10)
    assert (users["bob"]["file_count"], users["bob"]["total_bytes"]) == (0, 0)
    assert users["bob"]["email"] == "bob@example.com" and users["bob"]["valid_until"]
    assert [u["username"] for u in catalog.users(limit=1, after="alice")] == ["bob"]
    owned = catalog.owned_files("alice", limit=3)
    assert (owned["file_count"], owned["total_bytes"]) == (5, 10)
    assert paths(owned) == ["f0", "f1", "f2"] and owned["next"] == "f2"
    rest = catalog.owned_files("alice", limit=3, after=owned["next"])
    assert paths(rest) == ["f3", "f4"] and rest["next"] is None


def test_storage_samples_since_and_the_servers_current_usage(sessions):
    registry = register(sessions, "node1", "node2")
    catalog = Catalog(sessions)
    samples = [{"type": "sample", "t": T0 + i, "used": 100 + i, "available": 900 - i} for i in range(5)]
    catalog.apply_report(report("node1:1-5", "node1", *samples))
    catalog.apply_report(report("node2:1", "node2", {"type": "sample", "t": T0, "used": 7, "available": 8}))
    # A late, older sample is kept in the series but does not become the current value.
    catalog.apply_report(report("node1:0", "node1",
                                {"type": "sample", "t": T0 - 60, "used": 1, "available": 1}))
    every = catalog.samples("node1", None)
    assert [s["used_bytes"] for s in every] == [1, 100, 101, 102, 103, 104]
    assert datetime.fromisoformat(every[1]["t"]) == datetime.fromtimestamp(T0, timezone.utc)
    since = catalog.samples("node1", datetime.fromtimestamp(T0 + 2, timezone.utc))
    assert [(s["used_bytes"], s["available_bytes"]) for s in since] == [(102, 898), (103, 897), (104, 896)]
    assert [s["used_bytes"] for s in catalog.samples("node1", None, limit=2)] == [103, 104]
    listing = {s["name"]: s for s in registry.listing()}
    assert (listing["node1"]["used_bytes"], listing["node1"]["available_bytes"]) == (104, 896)
    assert (listing["node2"]["used_bytes"], listing["node2"]["available_bytes"]) == (7, 8)
    assert catalog.prune_samples(datetime.fromtimestamp(T0 + 3, timezone.utc)) == 5  # 4 + node2's
    assert [s["used_bytes"] for s in catalog.samples("node1", None)] == [103, 104]


def test_events_page_newest_first_load_then_keyset_pages_without_a_gap(sessions):
    with sessions.begin() as s:
        for i in range(1, 26):
            who = "bob" if i % 5 == 0 else "alice"
            s.add(Event(at=datetime.fromtimestamp(T0 + i, timezone.utc), kind="access",
                        username=who, operation="read", path=f"{who}/f{i}", result="ok"))
    newest = events_page(sessions, None, 4)
    assert [e["id"] for e in newest["events"]] == [22, 23, 24, 25] and newest["next"] is None
    got, after, pages = [], 0, 0
    while after is not None:
        page = events_page(sessions, after, 7)
        assert len(page["events"]) <= 7
        got += [e["id"] for e in page["events"]]
        after, pages = page["next"], pages + 1
    assert got == list(range(1, 26)) and pages == 4
    assert events_page(sessions, 25, 7) == {"events": [], "next": None}
    bobs = events_page(sessions, 0, 2, viewer="bob")
    assert [e["id"] for e in bobs["events"]] == [5, 10] and bobs["next"] == 10
    assert [e["id"] for e in events_page(sessions, 10, 9, viewer="bob")["events"]] == [15, 20, 25]
    assert events_page(sessions, 3, 1)["events"][0] == {
        "id": 4, "at": datetime.fromtimestamp(T0 + 4, timezone.utc).isoformat(), "kind": "access",
        "server": "", "username": "alice", "operation": "read", "path": "alice/f4",
        "result": "ok", "bytes": 0, "message": ""}


# -- server status -------------------------------------------------------------------------


@pytest.mark.parametrize("views, current, expected", [
    ({}, RUNNING, RUNNING),  # nobody can judge: unchanged
    ({}, DOWN, DOWN),
    ({"node1": DOWN, "node3": DOWN}, RUNNING, DOWN),  # two agree
    ({"node1": DOWN, "node3": RUNNING}, RUNNING, RUNNING),  # one partitioned observer
    ({"node1": FAILED, "node3": RUNNING}, RUNNING, RUNNING),
    ({"node1": FAILED, "node3": FAILED}, RUNNING, FAILED),
    ({"node1": FAILED, "node3": DOWN}, RUNNING, DOWN),  # failed needs agreement too
    ({"node1": DOWN, "node3": DOWN, "node4": RUNNING}, RUNNING, DOWN),
    ({"node1": "verifying", "node3": DOWN}, RUNNING, DOWN),  # verifying: not serving yet
    ({"node1": DOWN}, RUNNING, RUNNING),  # one observer cannot condemn a server that reports
    ({"node1": RUNNING}, DOWN, RUNNING),
])
def test_aggregate(views, current, expected):
    assert aggregate(views, current) == expected


@pytest.mark.parametrize("views, expected", [
    ({"node1": DOWN}, DOWN),  # two-node cluster, or a silent server: one observer decides
    ({"node1": FAILED}, FAILED),
    ({"node1": RUNNING}, RUNNING),
])
def test_aggregate_with_one_needed(views, expected):
    assert aggregate(views, RUNNING, needed=1) == expected


def status_event(subject, new, at, old=""):
    return {"type": "status", "subject": subject, "old": old, "new": new, "at": at}


class Reports:
    """Feeds status reports from named nodes through the catalogue, with unique ids."""

    def __init__(self, sessions, registry):
        self.catalog = Catalog(sessions, registry.on_status)
        self.registry = registry
        self.n = 0
        self.t = T0

    def send(self, observer, *views):
        self.n += 1
        self.t += 1
        self.catalog.apply_report(report(f"{observer}:{self.n}", observer,
                                         *[status_event(s, st, self.t) for s, st in views]))

    def statuses(self):
        return {s["name"]: s["status"] for s in self.registry.listing()}


def start_all(feed, names):
    for name in names:
        feed.send(name, (name, RUNNING), *[(p, RUNNING) for p in names if p != name])


def test_status_needs_two_running_observers_to_agree(sessions):
    names = ["node1", "node2", "node3"]
    feed = Reports(sessions, register(sessions, *names))
    assert set(feed.statuses().values()) == {UNKNOWN}
    start_all(feed, names)
    assert feed.statuses() == dict.fromkeys(names, RUNNING)
    feed.send("node1", ("node2", DOWN))  # node1 alone (partitioned) cannot condemn node2
    assert feed.statuses()["node2"] == RUNNING
    feed.send("node3", ("node2", DOWN))
    assert feed.statuses()["node2"] == DOWN
    # node2, now down, no longer judges: its view of node1 changes nothing.
    feed.send("node2", ("node1", DOWN))
    assert feed.statuses() == {"node1": RUNNING, "node2": DOWN, "node3": RUNNING}
    feed.send("node1", ("node2", FAILED))
    assert feed.statuses()["node2"] == DOWN
    feed.send("node3", ("node2", FAILED))
    assert feed.statuses()["node2"] == FAILED
    feed.send("node1", ("node2", RUNNING))
    feed.send("node3", ("node2", RUNNING))
    assert feed.statuses()["node2"] == RUNNING
    history = feed.registry.history("node2")
    cluster_changes = [(h["old"], h["new"]) for h in history if h["observer"] == "cluster"]
    assert cluster_changes == [(FAILED, RUNNING), (DOWN, FAILED), (RUNNING, DOWN), (UNKNOWN, RUNNING)]


def test_in_a_two_node_cluster_the_other_node_decides(sessions):
    names = ["node1", "node2"]
    feed = Reports(sessions, register(sessions, *names))
    start_all(feed, names)
    feed.send("node1", ("node2", DOWN))
    assert feed.statuses() == {"node1": RUNNING, "node2": DOWN}
    feed.send("node2", ("node1", DOWN))  # the down node's view does not count
    assert feed.statuses() == {"node1": RUNNING, "node2": DOWN}
    # Back together: each sees the other again (node2's old view of node1 counts once node2
    # runs, so both views must be current for both to run).
    feed.send("node2", ("node1", RUNNING))
    feed.send("node1", ("node2", RUNNING))
    assert feed.statuses() == {"node1": RUNNING, "node2": RUNNING}


def test_offline_servers_are_listed_as_offline_once_down(sessions):
    names = ["node1", "node2", "node3"]
    registry = register(sessions, *names)
    feed = Reports(sessions, registry)
    start_all(feed, names)
    assert registry.set_admin_state("node2", "offline").startswith("https://")
    feed.send("node2", ("node2", "offline"))
    listing = {s["name"]: s for s in registry.listing()}
    assert (listing["node2"]["status"], listing["node2"]["admin_state"]) == (RUNNING, "offline")
    feed.send("node1", ("node2", DOWN))
    feed.send("node3", ("node2", DOWN))
    assert feed.statuses()["node2"] == "offline"
    registry.set_admin_state("node2", "online")
    assert feed.statuses()["node2"] == DOWN
    with pytest.raises(ApiError) as e:
        registry.set_admin_state("node9", "offline")
    assert e.value.status == 404


def test_a_resent_status_report_adds_no_history(sessions):
    names = ["node1", "node2"]
    registry = register(sessions, *names)
    catalog = Catalog(sessions, registry.on_status)
    r = report("node1:1-2", "node1", status_event("node1", RUNNING, T0), status_event("node2", DOWN, T0 + 1))
    catalog.apply_report(r)
    before = snapshot(sessions)
    catalog.apply_report(dict(r, id="node1:1-3"))
    assert snapshot(sessions) == before
    with sessions() as s:
        assert s.get(Observation, ("node1", "node2")).status == DOWN
        assert s.get(Server, "node2").status == DOWN
