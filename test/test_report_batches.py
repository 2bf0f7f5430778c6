"""A node's report applied in bulk (admin/file_records.py) against the same events applied
one report each, on SQLite and PostgreSQL: the catalogue, usage, deletion marks, folders and
quota reservations must come out the same, in a bounded number of statements. And the
syslog receiver's audit events stored a batch at a time (admin/event_recorder.py)."""
import asyncio
import random
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, select, text, update

from securifile.admin import db
from securifile.admin.catalog import Catalog
from securifile.admin.event_recorder import EventRecorder
from securifile.admin.models import (
    DeletedFile, Event, File, Folder, OwnerUsage, Placement, QuotaReservation)
from securifile.admin.quotas import Quotas
from securifile.admin.service import AdminService
from securifile.common.config import Config
from securifile.common.syslog import SD_ACCESS, SD_RECORD
from securifile.common.times import aware

from .databases import db_url, fresh_postgres_database, sessions  # noqa: F401 (fixtures)
from .helpers import wait_for
from .test_admin_db import PASSWORD, T0, file_event, new_accounts, report

OWNERS = ("alice", "bob", "carol")  # carol has no account: her files are stamped with none
PATHS = ("a.txt", "docs/b.txt", "docs/c.txt", "docs/sub/d.txt", "x/y/z/e.bin", "f")


@pytest.fixture
def other_sessions(db_url, tmp_path):  # noqa: F811
    """A second empty database of the same kind as ``sessions``'s."""
    if db_url.startswith("sqlite"):
        url, drop = f"sqlite:///{tmp_path / 'other.sqlite3'}", None
    else:
        url, drop = fresh_postgres_database()
    engine = db.make_engine(url)
    db.upgrade(engine)
    yield db.session_factory(engine)
    engine.dispose()
    if drop is not None:
        drop()


def accounts(sessions):  # noqa: F811
    """The same accounts (same ids) in a database, and quotas that end reservations."""
    made = new_accounts(sessions)
    for name in OWNERS[:2]:
        made.create(name, f"{name}@example.com", 30, PASSWORD)
    with sessions.begin() as s:
        for i, user in enumerate(s.scalars(select(type(made.get("alice"))))):
            user.uid = f"uid{i}-{user.username}"
            user.created_at = datetime.fromtimestamp(T0 - 100, timezone.utc)
    catalog = Catalog(sessions)
    catalog.on_quota_done = Quotas(sessions, lambda: datetime.now(timezone.utc)).finish
    return catalog


def mixed_events(seed, count):
    """Creates, updates, stale and equal versions, deletions, late records of deleted
    files and creations again, of a few files of several owners, in random order, with
    the end of a quota reservation after some."""
    rng = random.Random(seed)
    versions = {}
    events, reservations = [], []
    for _ in range(count):
        key = (rng.choice(OWNERS), rng.choice(PATHS))
        newest = versions.get(key, 0)
        version = max(1, newest + rng.choice((-2, -1, 0, 1, 1, 1, 2)))
        versions[key] = max(newest, version)
        modified = T0 + version + rng.choice((0, 0, 0.25, 0.5))
        replicas = rng.sample([("node1", 0), ("node2", 1), ("node3", 2)], rng.randint(1, 3))
        e = file_event(*key, version=version, size=rng.randint(0, 5000), modified=modified,
                       origin=rng.choice(("node1", "node2")), replicas=replicas,
                       deleted=rng.random() < 0.25,
                       digest=f"d{rng.getrandbits(32):08x}")
        e["record"]["under_replicated"] = rng.random() < 0.2
        events.append(e)
        if rng.random() < 0.3:
            rid = uuid.uuid4().hex
            reservations.append((rid, key))
            events.append({"type": "quota_done", "id": rid})
    return events, reservations


def edges(version=100):
    """The cases a batch's random events may hide by overwriting them later: each file's
    last records here decide what it ends as."""
    def at(path, v, modified=0.0, **kw):
        return file_event("bob", path, version=v, modified=T0 + v + modified, **kw)

    return [
        at("a.txt", version, deleted=True), at("a.txt", version),  # refused: deleted at it
        at("f", version), at("f", version, 0.5, size=77),  # same version, later: replaces
        at("f", version, 0.25, size=99),  # same version, earlier: refused
        at("f", version - 1, 1.0, size=55),  # older version, however late: refused
        at("docs/b.txt", version, deleted=True), at("docs/b.txt", version + 1, size=5),
        at("docs/b.txt", version + 2, deleted=True),  # gone again, at a newer version
        at("docs/c.txt", version, size=8), at("docs/c.txt", version + 1, deleted=True),
        at("docs/c.txt", version + 2, size=9, replicas=(("node3", 1),)),  # created again
    ]


def reserve(sessions, reservations):  # noqa: F811
    with sessions.begin() as s:
        for rid, (owner, path) in reservations:
            s.add(QuotaReservation(id=rid, node="node1", owner=owner, path=path, bytes=1,
                                   expires_at=datetime.now(timezone.utc) + timedelta(hours=1)))
        # One of another node's, named in this node's report: not this node's to end.
        s.add(QuotaReservation(id="f" * 32, node="node2", owner="alice", path="a.txt",
                               bytes=1, expires_at=datetime.now(timezone.utc) + timedelta(hours=1)))


def catalogue(sessions):  # noqa: F811
    """Everything a report can change, without row ids (a file deleted and created again
    gets a new one either way)."""
    with sessions() as s:
        files = {f.id: (f.owner, f.path) for f in s.scalars(select(File))}
        return {
            "files": sorted((f.owner, f.path, f.folder, f.size, f.digest, f.algorithm, f.version,
                             f.origin, f.under_replicated, aware(f.created_at),
                             aware(f.modified_at), f.owner_uid) for f in s.scalars(select(File))),
            "placements": sorted((*files[p.file_id], p.server, p.priority)
                                 for p in s.scalars(select(Placement))),
            "folders": sorted((f.owner, f.path, f.parent) for f in s.scalars(select(Folder))),
            "tombstones": sorted((t.owner, t.path, t.version, aware(t.deleted_at))
                                 for t in s.scalars(select(DeletedFile))),
            "usage": sorted((u.owner, u.file_count, u.total_bytes)
                            for u in s.scalars(select(OwnerUsage))),
            "reservations": sorted(r.id for r in s.scalars(select(QuotaReservation))),
        }


def rules(events):
    """What the catalogue must hold after ``events`` one at a time, by the rules alone
    (docs/DESIGN.md): files by key with their (version, size, digest, origin, flag,
    replicas), deletion marks by key with their version, usage, folders."""
    files, marks = {}, {}
    for rec in (e["record"] for e in events if e["type"] == "file"):
        key, version, modified = (rec["owner"], rec["path"]), rec["version"], rec["modified"]
        old = files.get(key)
        if old is not None and (version, modified) <= (old["version"], old["modified"]):
            continue
        if marks.get(key, 0) >= version:
            continue
        if rec["deleted"]:
            files.pop(key, None)
            marks[key] = version
            continue
        marks.pop(key, None)
        files[key] = dict(rec)
    usage = {}
    for (owner, _), rec in files.items():
        count, size = usage.get(owner, (0, 0))
        usage[owner] = (count + 1, size + rec["size"])
    folders = {(owner, "/".join(path.split("/")[:i])) for owner, path in files
               for i in range(1, path.count("/") + 1)}
    return ({key: (r["version"], r["size"], r["digest"], r["origin"], r.get("under_replicated", False),
                   sorted((p["server"], p["priority"]) for p in r["replicas"]))
             for key, r in files.items()}, marks, usage, folders)


def held(got):
    """``catalogue``'s answer in the shape of ``rules``'s."""
    replicas = {}
    for owner, path, server, priority in got["placements"]:
        replicas.setdefault((owner, path), []).append((server, priority))
    files = {(f[0], f[1]): (f[6], f[3], f[4], f[7], f[8], sorted(replicas.get((f[0], f[1]), [])))
             for f in got["files"]}
    usage = {owner: (count, size) for owner, count, size in got["usage"] if count or size}
    return (files, {(t[0], t[1]): t[2] for t in got["tombstones"]}, usage,
            {(f[0], f[1]) for f in got["folders"]})


@pytest.mark.parametrize("seed", [1, 2])
def test_a_mixed_batch_gives_what_its_events_one_by_one_give(sessions, other_sessions, seed):  # noqa: F811
    bulk, single = accounts(sessions), accounts(other_sessions)
    before, _ = mixed_events(seed * 100, 40)  # rows, deletion marks and folders to start from
    events, reservations = mixed_events(seed, 400)
    events += edges()
    for sessions_, catalog in ((sessions, bulk), (other_sessions, single)):
        catalog.apply_report(report("node1:0", "node1", *before))
        reserve(sessions_, reservations)
    assert bulk.apply_report(report("node1:1-412", "node1", *events)) is True
    for i, e in enumerate(events):
        assert single.apply_report(report(f"node1:{i + 1}", "node1", e)) is True
    got = catalogue(sessions)
    assert got == catalogue(other_sessions)
    assert held(got) == rules(before + events)
    # The batch did something of each kind, and a resent batch changes nothing.
    assert got["files"] and got["tombstones"] and got["folders"]
    assert got["reservations"] == ["f" * 32]
    assert {u[0] for u in got["usage"]} == set(OWNERS)
    assert {f[-1] for f in got["files"] if f[0] == "carol"} == {None}
    assert bulk.apply_report(report("node1:1-412", "node1", *events)) is False
    assert bulk.apply_report(report("node1:1-413", "node1", *events)) is True
    assert catalogue(sessions) == got


def test_reports_of_the_same_files_from_two_nodes_at_once(sessions):  # noqa: F811
    """Every holder reports each file: two reports of the same rows, new and existing, in
    different orders, applied at the same time, must neither deadlock nor lose a change
    (PostgreSQL locks the rows in key order; a race on a new row is run again)."""
    catalog = accounts(sessions)
    rng = random.Random(7)
    # Each version of a file once: then the newest record wins in any order of application.
    versions = {(o, p): rng.sample(range(1, 1000), 60) for o in OWNERS for p in PATHS}
    rounds = []
    for _ in range(6):
        events = [file_event(o, p, version=versions[o, p].pop(), size=rng.randint(0, 999),
                             deleted=rng.random() < 0.3, replicas=(("node1", 0),))
                  for _ in range(120) for o, p in [(rng.choice(OWNERS), rng.choice(PATHS))]]
        rounds.append((events, list(reversed(events))))
    errors = []

    def apply(node, i, events):
        try:
            catalog.apply_report(report(f"{node}:{i}", node, *events))
        except Exception as e:  # the test reports it
            errors.append(e)

    everything = []
    for i, (first, second) in enumerate(rounds):
        threads = [threading.Thread(target=apply, args=("node1", i, first)),
                   threading.Thread(target=apply, args=("node2", i, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads) and errors == []
        everything += first
    files, marks, usage, _ = rules(sorted(everything, key=lambda e: e["record"]["version"]))
    got = held(catalogue(sessions))
    assert (got[0], got[2]) == (files, usage)


def test_a_report_waits_for_a_concurrent_change_of_its_rows_and_keeps_the_newer(sessions):  # noqa: F811
    """Another request changes a file the report holds an older record of, and commits only
    once the report is under way: the report must read the row after that commit (locked
    on PostgreSQL, the database's write lock on SQLite), not overwrite it from before."""
    catalog = accounts(sessions)
    catalog.apply_report(report("node1:1", "node1", file_event("alice", "f", version=1)))
    engine = sessions.kw["bind"]
    holder = sessions()
    holder.begin()
    holder.execute(update(File).where(File.owner == "alice", File.path == "f")
                   .values(version=50, modified_at=datetime.fromtimestamp(T0 + 50, timezone.utc)))
    result = {}

    def race():
        try:
            result["applied"] = catalog.apply_report(
                report("node2:1", "node2", file_event("alice", "f", version=10, size=99)))
        except Exception as e:  # the test reports it
            result["error"] = e

    racer = threading.Thread(target=race)
    try:
        racer.start()
        if engine.dialect.name == "postgresql":
            def report_waits():
                with engine.connect() as c:
                    return c.scalar(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"))
            wait_for(report_waits, what="the report waiting for the row")
        holder.commit()
        racer.join(60)
        assert not racer.is_alive() and result == {"applied": True}
    finally:
        holder.close()
    f = catalog.file("alice", "f")
    assert (f.version, f.size) == (50, 10)


def test_malformed_events_are_skipped_and_the_rest_applies(sessions):  # noqa: F811
    catalog = accounts(sessions)
    good = file_event("alice", "docs/ok.txt", size=7)
    bad = [file_event("alice", "x" * 1100),  # longer than the column
           {"type": "file", "record": {"owner": "alice", "path": "no-version.txt"}},
           file_event("alice", "n.txt", size="many"),
           dict(file_event("alice", "r.txt"), record=dict(file_event("alice", "r.txt")["record"],
                                                          replicas=[{"server": 3}])),
           file_event(["alice"], "list-owner.txt"),
           {"type": "gossip"}, "not even an object"]
    # A deletion needs only its name, version and time (a tombstone may carry no digest).
    deletion = file_event("alice", "gone.txt", version=2, deleted=True)
    deletion["record"].update(digest=None, replicas=None)
    assert catalog.apply_report(report("node1:1-9", "node1", bad[0], good, *bad[1:],
                                       deletion)) is True
    assert catalog.rejected_events == len(bad)
    got = catalogue(sessions)
    assert [(f[0], f[1], f[3]) for f in got["files"]] == [("alice", "docs/ok.txt", 7)]
    assert got["usage"] == [("alice", 1, 7)]
    assert [t[:3] for t in got["tombstones"]] == [("alice", "gone.txt", 2)]


def test_a_batch_costs_a_bounded_number_of_statements(sessions):  # noqa: F811
    """Statements per report, whatever its number of files: the admin server's CPU per
    upload would otherwise be the node's (about twenty statements per file before)."""
    catalog = accounts(sessions)
    statements = []
    engine = sessions.kw["bind"]

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    events, reservations = mixed_events(3, 300)
    reserve(sessions, reservations)
    event.listen(engine, "before_cursor_execute", count)
    try:
        catalog.apply_report(report("node1:1-300", "node1", *events))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Claim, server, rows, marks, accounts, deletes, update, insert, folders, placements,
    # marks, usage, reservations, and a folder check for each folder emptied.
    assert len(statements) <= 30, statements


# -- audit events from the syslog receiver, in batches -----------------------------------------


def access_event(n, record_id=None, kind="ACCESS"):
    sd = {SD_ACCESS: {"user": "bob", "op": "read", "path": f"alice/{n}", "server": "node1",
                      "result": "200", "bytes": "3"}}
    if record_id is not None:
        sd[SD_RECORD] = {"id": record_id}
    return {"msgid": kind, "hostname": "node1", "msg": f"bob read alice/{n}", "sd": sd}


def stored_events(sessions):  # noqa: F811
    with sessions() as s:
        return [(e.path, e.record_id) for e in s.scalars(select(Event).order_by(Event.id))]


def test_events_of_a_batch_are_stored_once_each_and_a_bad_one_loses_only_itself(sessions, tmp_path):  # noqa: F811
    service = AdminService(Config(data_dir=tmp_path, certs_dir=tmp_path / "certs",
                                  bcrypt_rounds=4), sessions)
    ids = [f"{i:032x}" for i in range(4)]
    batch = [access_event(i, ids[i]) for i in range(4)] + [access_event(0, ids[0])]
    service.record_events(batch + [access_event(9)])
    service.record_events(batch)  # sent again (to this instance or another)
    assert stored_events(sessions) == [(f"alice/{i}", ids[i]) for i in range(4)] + [
        ("alice/9", None)]
    # A kind longer than its column: PostgreSQL refuses that row (SQLite keeps it); the
    # others of its batch are stored all the same.
    service.record_events([access_event(10), access_event(11, kind="X" * 40), access_event(12)])
    paths = [p for p, _ in stored_events(sessions)]
    assert paths[5] == "alice/10" and paths[-1] == "alice/12"
    assert ("alice/11" in paths) == (sessions.kw["bind"].dialect.name == "sqlite")


def test_the_recorder_gathers_events_into_few_batches_in_order():
    batches = []

    def record(events):
        if any(e == "poison" for e in events):
            raise RuntimeError("the database is gone")
        batches.append(list(events))

    async def scenario():
        recorder = EventRecorder(record, delay=0.05, batch=40, max_pending=100)
        for i in range(100):
            await recorder.add(i)
        await until(lambda: sum(map(len, batches)) == 100, what="all 100 events stored")
        assert [e for b in batches for e in b] == list(range(100))
        assert len(batches) <= 5 and max(map(len, batches)) <= 40
        await recorder.add("poison")
        await recorder.add(100)
        await recorder.flush()
        assert recorder.failed == 2  # the whole batch the database refused
        await recorder.add(101)
        await recorder.flush()  # at shutdown: nothing queued is left behind
        assert batches[-1] == [101]

    asyncio.run(asyncio.wait_for(scenario(), 15))


async def until(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
