"""The file catalogue: applies nodes' reports and answers the GUI's questions in SQL.

Reports are applied idempotently: each has an id that is recorded in the same transaction,
and a file record only replaces an older version, so a node that resends after a lost
answer (or two nodes reporting one change) leaves the database as one report would.
"""
import logging
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger, String, and_, any_, cast, delete, func, literal, literal_column, or_, select,
    update)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from securifile.common.roles import OWNER
from securifile.common.times import epoch, from_epoch, iso

from .coordination import insert_once
from .db import reading
from .file_records import FileRecord, apply_file_records, upper_bound
from .namespaces import visible_clause
from .rowjson import Field, Fields
from .models import (
    AppliedReport, DeletedFile, File, Folder, Grant, OwnerUsage, Placement, Server, StorageSample,
    User)

log = logging.getLogger("securifile.admin.catalog")


def file_json(f, role=None, replicas=None):
    """A file as the API shows it; ``replicas`` (when given) instead of ``f.placements``."""
    if replicas is None:
        replicas = [{"server": p.server, "priority": p.priority} for p in f.placements]
    d = {
        "owner": f.owner, "path": f.path, "size": f.size, "digest": f.digest,
        "algorithm": f.algorithm, "version": f.version, "modified": iso(f.modified_at),
        "created": iso(f.created_at), "origin": f.origin, "under_replicated": f.under_replicated,
        "replicas": replicas,
    }
    if role is not None:
        d["role"] = role
    return d


class Catalog:
    def __init__(self, sessions, on_status=None):
        self.sessions = sessions
        self.reading = reading(sessions)  # the GUI's pages
        self.rejected_events = 0
        self.on_status = on_status  # (session, observer, event) -> None, set by the server logic
        self.on_quota_done = None  # (session, server, [reservation id]) -> None, likewise

    # -- applying reports ------------------------------------------------------------------

    def apply_report(self, report, attempts=3):
        """Apply one node report; returns False if it was applied before.

        Two requests can race for the same new rows: the first files of one owner reported
        by two nodes at once. The loser's transaction fails on a unique key and is run again
        from the start, when it sees the winner's rows.
        """
        for attempt in range(attempts):
            try:
                return self._apply_once(report)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        return False

    def _apply_once(self, report):
        """The whole report in one transaction: its id claimed first (a concurrent copy of
        the same report waits for it, then finds it applied), file records and the ends of
        quota reservations in bulk (admin/file_records.py), then status and samples."""
        rid, server = str(report["id"]), str(report["server"])
        now = datetime.now(timezone.utc)
        with self.sessions.begin() as s:
            claimed = s.execute(insert_once(s, AppliedReport,
                                             {"id": rid, "server": server, "at": now}, "id"))
            if claimed.rowcount == 0:
                return False
            s.execute(update(Server).where(Server.name == server).values(last_report=now))
            records, quota_done, others = self._sort_events(server, report.get("events", []))
            apply_file_records(s, records)
            if quota_done:
                # Queued after the files' own events: those files count from here on.
                self.on_quota_done(s, server, quota_done)
            for event in others:
                self._apply_event(s, server, event)
        return True

    def _sort_events(self, server, events):
        """(file records, quota reservation ids, other events) of a report, each in queue
        order; a malformed event is logged, counted and skipped, so it cannot hold up the
        node's queue for ever (the rest of the batch still applies)."""
        records, quota_done, others = [], [], []
        for event in events:
            try:
                kind = event.get("type")
                if kind == "file":
                    records.append(FileRecord.parse(event["record"]))
                elif kind == "quota_done" and self.on_quota_done is not None:
                    quota_done.append(str(event["id"]))
                elif kind == "sample" or (kind == "status" and self.on_status is not None):
                    others.append(event)
                else:
                    raise ValueError(f"unknown event type {kind!r}")
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                self._reject(server, event, e)
        return records, quota_done, others

    def _reject(self, server, event, error):
        self.rejected_events += 1
        log.error("report from %s: event skipped (%s): %.300r", server, error, event)

    def _apply_event(self, s, server, event):
        """A status change or a storage sample (a few per report) in its own savepoint."""
        try:
            with s.begin_nested():
                if event["type"] == "sample":
                    self._apply_sample(s, server, event)
                else:
                    self.on_status(s, server, event)
        except IntegrityError:
            raise  # a race with another request: the whole report is tried again
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self._reject(server, event, e)

    def _apply_sample(self, s, server, event):
        t, used, available = from_epoch(event["t"]), int(event["used"]), int(event["available"])
        # A node's batch ids change when events queue up behind a lost answer, so the same
        # sample can come again in another report: one per server and time.
        if s.scalar(select(StorageSample.id).where(
                StorageSample.server == server, StorageSample.t == t).limit(1)) is not None:
            return
        s.add(StorageSample(server=server, t=t, used_bytes=used, available_bytes=available))
        row = s.get(Server, server)
        if row is not None and (row.sampled_at is None or epoch(row.sampled_at) <= epoch(t)):
            row.used_bytes, row.available_bytes, row.sampled_at = used, available, t

    # -- queries ---------------------------------------------------------------------------

    def list_folder(self, caller, owner, folder, role_of, limit=500, after=None, recursive=False,
                    grant_paths=None):
        """Files (and, unless recursive, subfolders) under ``owner/folder`` the caller may see.

        ``role_of(path)`` gives the caller's role on a path; a caller without a role on the
        folder itself sees only what grants beneath it open up (``grant_paths``: the paths
        of the caller's grants in this namespace, when the caller has read them already).
        """
        folder = folder.strip("/")
        limit = max(1, min(int(limit), 5000))
        folder_key = folder + "/" if folder else ""
        whole = role_of(folder_key) is not None
        with self.reading() as s:
            unsealed = visible_clause(s, owner)
            q = _owner_files(s, owner, unsealed)
            if recursive:
                if folder:
                    q = q.where(File.path >= folder + "/", File.path < upper_bound(folder))
            else:
                q = q.where(File.folder == folder)
            grants = [] if whole or caller == owner else (
                grant_paths if grant_paths is not None else _grant_paths(s, caller, owner))
            if not whole:
                inside = [g for g in grants if _under(g, folder_key)]
                visible = [_grant_clause(g) for g in inside if g.endswith("/")]
                shared = [g for g in inside if not g.endswith("/")]
                if shared:  # one parameter, not one OR term per file shared
                    visible.append(_one_of(s, File.path, shared, String))
                q = q.where(or_(*visible) if visible else False)
            files, more = _keyset_page(s, q, limit, after)
            _add_roles(files, role_of)
            folders = []
            if not recursive and after is None:
                fq = select(Folder.path).where(Folder.owner == owner, Folder.parent == folder)
                names = s.scalars(fq.order_by(Folder.path).limit(5000)).all()
                folders = [p for p in names if whole or role_of(p + "/") is not None
                           or any(covers_below(g, p) for g in grants)]
                if unsealed is not None:  # only folders that hold a file still reachable
                    folders = [p for p in folders if s.scalar(
                        select(File.id).where(File.owner == owner, unsealed, File.path >= p + "/",
                                              File.path < upper_bound(p)).limit(1)) is not None]
        return {"owner": owner, "folder": folder, "files": files, "folders": folders,
                "next": files[-1]["path"] if more else None}

    def file(self, owner, path):
        with self.sessions() as s:
            return s.scalar(select(File).where(File.owner == owner, File.path == path)
                            .options(selectinload(File.placements)))

    def users(self, limit=1000, after=None, only=None):
        """A page of accounts by name (keyset: ``after`` is the last name of the page before;
        a page shorter than ``limit`` is the last), with their totals from owner_usage;
        ``only``: just that account (or none)."""
        with self.reading() as s:
            q = (select(*USER_FIELDS.columns(s))
                 .join(OwnerUsage, OwnerUsage.owner == User.username, isouter=True))
            if only is not None:
                q = q.where(User.username == only)
            if after:
                q = q.where(User.username > after)
            return USER_FIELDS.objects(s, s.execute(q.order_by(User.username).limit(limit)))

    def owned_files(self, owner, limit=500, after=None):
        with self.reading() as s:
            files, more = _keyset_page(s, _owner_files(s, owner, visible_clause(s, owner)),
                                       limit, after)
            usage = s.execute(select(OwnerUsage.file_count, OwnerUsage.total_bytes)
                              .where(OwnerUsage.owner == owner)).first()
        for f in files:
            f["role"] = OWNER
        return {"username": owner, "file_count": usage.file_count if usage else 0,
                "total_bytes": usage.total_bytes if usage else 0, "files": files,
                "next": files[-1]["path"] if more else None}

    def samples(self, server, since, limit=2000):
        """The newest ``limit`` samples at or after ``since`` (the time of the last sample a
        client holds: it asks only for what is new), oldest first."""
        with self.reading() as s:
            q = select(*SAMPLE_FIELDS.columns(s)).where(StorageSample.server == server)
            if since is not None:
                q = q.where(StorageSample.t >= since)
            rows = s.execute(q.order_by(StorageSample.t.desc()).limit(limit)).all()
            return SAMPLE_FIELDS.objects(s, reversed(rows))

    def prune_tombstones(self, before):
        """Deletions older than any report still queued on a node can be forgotten."""
        with self.sessions.begin() as s:
            return s.execute(delete(DeletedFile).where(DeletedFile.deleted_at < before)).rowcount

    def prune_samples(self, before):
        with self.sessions.begin() as s:
            return s.execute(delete(StorageSample).where(StorageSample.t < before)).rowcount

    def reconcile_usage(self):
        """Recount every owner's usage from ``files`` (an operator's repair, not a hot path)."""
        with self.sessions.begin() as s:
            s.execute(delete(OwnerUsage))
            for owner, count, total in s.execute(
                    select(File.owner, func.count(), func.coalesce(func.sum(File.size), 0))
                    .group_by(File.owner)):
                s.add(OwnerUsage(owner=owner, file_count=count, total_bytes=total))


def _add_roles(files, role_of):
    """Each file's ``role`` for the caller (none: no key, as ``file_json`` leaves it)."""
    for f in files:
        role = role_of(f["path"])
        if role is not None:
            f["role"] = role


REPLICA_SEP = "\n"  # between a file's replicas in the page query's text column


def _replicas_column():
    """SQLite: a file's replicas as one text column, 'priority server' joined by
    REPLICA_SEP (a correlated subquery on placements' primary key): the page and its
    replicas come in one statement."""
    pair = cast(Placement.priority, String) + " " + Placement.server
    return (select(func.aggregate_strings(pair, REPLICA_SEP))
            .where(Placement.file_id == File.id).scalar_subquery())


def _replicas_json():
    """PostgreSQL: a file's replicas as the API's JSON list, by priority."""
    pair = func.json_build_object(literal_column("'server'"), Placement.server,
                                  literal_column("'priority'"), Placement.priority)
    return func.coalesce(
        select(func.json_agg(aggregate_order_by(pair, Placement.priority, Placement.server)))
        .where(Placement.file_id == File.id).scalar_subquery(),
        literal_column("'[]'::json"))


def _replicas(text):
    """``_replicas_column``'s text as the API's list, by priority."""
    if not text:
        return []
    pairs = (item.split(" ", 1) for item in text.split(REPLICA_SEP))
    return [{"server": server, "priority": priority}
            for priority, server in sorted((int(p), server) for p, server in pairs)]


# A file as the API shows it (``file_json``), for a page of rows.
FILE_FIELDS = Fields(
    Field("owner", File.owner), Field("path", File.path), Field("size", File.size),
    Field("digest", File.digest), Field("algorithm", File.algorithm),
    Field("version", File.version), Field("modified", File.modified_at),
    Field("created", File.created_at), Field("origin", File.origin),
    Field("under_replicated", File.under_replicated),
    Field("replicas", _replicas_column(), postgres=_replicas_json(), convert=_replicas))


# An account as the users list shows it, with its totals from owner_usage.
USER_FIELDS = Fields(
    Field("username", User.username), Field("id", User.uid), Field("email", User.email),
    Field("admin", User.admin), Field("disabled", User.disabled),
    Field("valid_until", User.valid_until), Field("created", User.created_at),
    Field("file_count", func.coalesce(OwnerUsage.file_count, 0)),
    Field("total_bytes", func.coalesce(OwnerUsage.total_bytes, 0)),
    Field("quota_bytes", User.quota_bytes))

SAMPLE_FIELDS = Fields(Field("t", StorageSample.t), Field("used_bytes", StorageSample.used_bytes),
                       Field("available_bytes", StorageSample.available_bytes))


def _one_of(s, column, values, kind=BigInteger):
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``, one parameter:
    rendering and converting a page's hundreds of placeholders cost more than the query.
    The array goes as its text ('{"a","b"}', cast by the server): pg8000 escapes an array
    parameter character by character in Python."""
    if s.get_bind().dialect.name == "postgresql":
        return column == any_(cast(literal(array_text(values), String), ARRAY(kind)))
    return column.in_(values)


def array_text(values):
    """PostgreSQL's text for an array of ``values`` (strings quoted, '"' and '\\' escaped)."""
    return "{" + ",".join(
        str(v) if isinstance(v, int) else
        '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def _under(grant_path, folder_key):
    """Whether a grant on ``grant_path`` opens something below the folder ``folder_key``."""
    return grant_path.startswith(folder_key)


def _grant_clause(grant_path):
    if grant_path.endswith("/"):
        return and_(File.path >= grant_path, File.path < upper_bound(grant_path[:-1]))
    return File.path == grant_path


def _owner_files(s, owner, unsealed):
    """The query for ``owner``'s files as the API's objects with their replicas
    (``FILE_FIELDS``), only those ``unsealed`` lets through (if not None)."""
    q = select(*FILE_FIELDS.columns(s)).where(File.owner == owner)
    return q if unsealed is None else q.where(unsealed)


def _keyset_page(s, q, limit, after):
    """Up to ``limit`` files of ``q`` (``_owner_files``) by path after ``after``, as
    objects, and whether more follow."""
    if after:
        q = q.where(File.path > after)
    rows = s.execute(q.order_by(File.path).limit(limit + 1)).all()
    return FILE_FIELDS.objects(s, rows[:limit]), len(rows) > limit


def _grant_paths(s, caller, owner):
    return s.scalars(select(Grant.path).where(Grant.grantee == caller, Grant.owner == owner)).all()


def covers_below(grant_path, folder):
    """Whether ``grant_path`` lies inside ``folder`` (so the folder leads to something shared)."""
    return grant_path.startswith(folder + "/")
