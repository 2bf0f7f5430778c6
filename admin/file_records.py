"""A report's file records applied to the catalogue in bulk.

A node's report carries one record per upload or deletion, hundreds per batch under load.
Applied one at a time through ORM entities they cost the admin server as much CPU as the
node that stored the file. Here a batch costs a few statements: the rows the records touch
are read at once (``files`` locked on PostgreSQL), the records are replayed in memory in the
order the node queued them with the rules of one-at-a-time application, and what survives
is written with executemany, usage summed per owner.

The rules (as each record would be applied alone): a record replaces only an older
(version, modified) of its file; a deletion recorded at the record's version or newer
refuses it; a deletion removes the file and leaves that mark; a new file is stamped with
its owner's account id (admin/namespaces.py) and fills in its folders; a folder left empty
by a deletion goes.
"""
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, insert, select, tuple_, update

from securifile.common.times import epoch, from_epoch

from .bulk import dialect_insert, insert_rows, pages
from .models import DeletedFile, File, Folder, OwnerUsage, Placement
from .namespaces import OwnerStamps

FILES, PLACEMENTS, TOMBS = File.__table__, Placement.__table__, DeletedFile.__table__
# Column widths (admin/models.py): a longer value is a malformed record, skipped like any
# other rather than failing the batch (and the node's queue behind it) on PostgreSQL.
WIDTHS = {"owner": 64, "path": 1024, "digest": 128, "algorithm": 16, "origin": 64}
NOT_KEPT = {"digest", "algorithm", "origin"}  # of a deletion


def folder_of(path):
    return path.rpartition("/")[0]


def ancestors(path):
    """'a/b/c.txt' -> ['a', 'a/b']."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def upper_bound(prefix):
    """The smallest string above every string that starts with ``prefix/``."""
    return prefix + "0"  # '0' is the character after '/'


@dataclass
class FileRecord:
    """One file event's record, checked and converted; ``modified`` as the database keeps
    it (microseconds), so that comparisons in memory agree with those against stored rows."""
    owner: str
    path: str
    version: int
    modified: float
    size: int
    digest: str
    algorithm: str
    origin: str
    under_replicated: bool
    replicas: list  # [(server, priority)] by priority
    deleted: bool

    @classmethod
    def parse(cls, rec):
        """The record of a file event; KeyError, TypeError or ValueError when malformed.
        A deletion needs only its name, version and time: nothing else of it is kept."""
        deleted = bool(rec.get("deleted"))
        text = {}
        for name, width in WIDTHS.items():
            value = rec.get(name, "") if deleted and name in NOT_KEPT else rec[name]
            if deleted and name in NOT_KEPT and value is None:
                value = ""
            if not isinstance(value, str) or len(value) > width:
                raise ValueError(f"{name} must be text of at most {width} characters")
            text[name] = value
        replicas = []
        for r in [] if deleted else rec.get("replicas", []):
            server = r["server"]
            if not isinstance(server, str) or len(server) > 64:
                raise ValueError("a replica's server must be a name")
            replicas.append((server, int(r["priority"])))
        replicas.sort(key=lambda r: r[1])
        if len({server for server, _ in replicas}) != len(replicas):
            raise ValueError("a server holds a file once")
        return cls(version=int(rec["version"]), modified=epoch(from_epoch(rec["modified"])),
                   size=0 if deleted else int(rec["size"]),
                   under_replicated=bool(rec.get("under_replicated", False)),
                   replicas=replicas, deleted=deleted, **text)

    @property
    def key(self):
        return self.owner, self.path

    def newer_than(self, version, modified):
        return (self.version, self.modified) > (version, modified)


class FileState:
    """One file's row and deletion mark while a batch's records are replayed."""

    def __init__(self, row, tomb):
        self.old_id = row.id if row is not None else None
        self.present = row is not None
        self.replaced = False  # the stored row was deleted (a record may create it again)
        self.size = row.size if row is not None else 0
        self.version = row.version if row is not None else None
        self.modified = epoch(row.modified_at) if row is not None else None
        self.created = None  # (created_at, owner_uid) of a row made by this batch
        self.record = None  # the record the row ends with, if one changed it
        self.old_tomb = (tomb.version, tomb.deleted_at) if tomb is not None else None
        self.tomb = self.old_tomb  # (version, deleted_at) of the deletion mark

    def apply(self, rec, stamps, usage):
        """Apply ``rec`` as if alone; ``usage[owner]`` collects [files, bytes] deltas."""
        if self.present and not rec.newer_than(self.version, self.modified):
            return
        if self.tomb is not None and self.tomb[0] >= rec.version:
            return  # deleted at a newer version than this record
        if rec.deleted:
            if self.present:
                delta = usage.setdefault(rec.owner, [0, 0])
                delta[0] -= 1
                delta[1] -= self.size
                self.present, self.record, self.created = False, None, None
                self.replaced = self.old_id is not None
            self.tomb = (rec.version, from_epoch(rec.modified))
            return
        self.tomb = None  # created again, above the deletion's version
        delta = usage.setdefault(rec.owner, [0, 0])
        if not self.present:
            at = from_epoch(rec.modified)
            self.created = (at, stamps.uid(rec.owner, at))
            self.present, self.size = True, 0
            delta[0] += 1
        delta[1] += rec.size - self.size
        self.size, self.version, self.modified, self.record = (
            rec.size, rec.version, rec.modified, rec)


def apply_file_records(s, records):
    """Apply ``records`` (FileRecord, in queue order) in session ``s``'s transaction."""
    if not records:
        return
    keys = sorted({r.key for r in records})
    rows = {}
    for chunk in pages(keys):
        # Locked in key order on PostgreSQL: two reports of the same files queue here
        # instead of deadlocking, and the second sees what the first wrote.
        q = (select(FILES.c.id, FILES.c.owner, FILES.c.path, FILES.c.size, FILES.c.version,
                    FILES.c.modified_at)
             .where(tuple_(FILES.c.owner, FILES.c.path).in_(chunk))
             .order_by(FILES.c.owner, FILES.c.path).with_for_update())
        rows.update(((r.owner, r.path), r) for r in s.execute(q))
    tombs = {}
    for chunk in pages(keys):
        q = select(TOMBS).where(tuple_(TOMBS.c.owner, TOMBS.c.path).in_(chunk))
        tombs.update(((t.owner, t.path), t) for t in s.execute(q))
    stamps = OwnerStamps(s, {owner for owner, _ in keys})
    states = {key: FileState(rows.get(key), tombs.get(key)) for key in keys}
    usage = {}
    for rec in records:
        states[rec.key].apply(rec, stamps, usage)
    _write(s, states)
    _add_usage(s, usage)


def _write(s, states):
    """The replay's outcome as statements: deletions first (a file deleted and created again
    in one batch is a new row, as it would have been), then updates, inserts, placements."""
    gone = [st.old_id for st in states.values() if st.replaced]
    changed = [st for st in states.values()
               if st.record is not None and st.old_id is not None and not st.replaced]
    _delete_in(s, PLACEMENTS.c.file_id, gone + [st.old_id for st in changed])
    _delete_in(s, FILES.c.id, gone)
    if changed:
        s.execute(update(FILES).where(FILES.c.id == bindparam("b_id"))
                  .values({c: bindparam(c) for c in RECORD_COLUMNS}),
                  [dict(_columns(st.record), b_id=st.old_id) for st in changed])
    new = [(key, st) for key, st in states.items() if st.created is not None]
    ids = {}
    if new:
        made = insert_rows(s, insert(FILES), [
            dict(_columns(st.record), owner=owner, path=path, folder=folder_of(path),
                 created_at=st.created[0], owner_uid=st.created[1])
            for (owner, path), st in new], returning=(FILES.c.id, FILES.c.owner, FILES.c.path))
        ids = {(r.owner, r.path): r.id for r in made}
        folders = {(owner, f): folder_of(f) for (owner, path), _ in new for f in ancestors(path)}
        insert_rows(s, dialect_insert(s, Folder).on_conflict_do_nothing(),
                    [{"owner": o, "path": p, "parent": parent}
                     for (o, p), parent in sorted(folders.items())])
    placements = [{"file_id": ids.get(key, st.old_id), "server": server, "priority": priority}
                  for key, st in states.items() if st.record is not None
                  for server, priority in st.record.replicas]
    insert_rows(s, insert(PLACEMENTS), placements)
    _write_tombs(s, states)
    _prune_folders(s, sorted(key for key, st in states.items() if st.replaced and not st.present))


RECORD_COLUMNS = ("size", "digest", "algorithm", "version", "origin", "modified_at",
                  "under_replicated")


def _columns(rec):
    return {"size": rec.size, "digest": rec.digest, "algorithm": rec.algorithm,
            "version": rec.version, "origin": rec.origin,
            "modified_at": from_epoch(rec.modified), "under_replicated": rec.under_replicated}


def _write_tombs(s, states):
    dropped = [key for key, st in states.items() if st.old_tomb is not None and st.tomb is None]
    for chunk in pages(dropped):
        s.execute(delete(TOMBS).where(tuple_(TOMBS.c.owner, TOMBS.c.path).in_(chunk)))
    moved = [{"b_owner": o, "b_path": p, "version": st.tomb[0], "deleted_at": st.tomb[1]}
             for (o, p), st in states.items() if st.old_tomb is not None and st.tomb is not None
             and st.tomb[0] != st.old_tomb[0]]
    if moved:
        s.execute(update(TOMBS).where(TOMBS.c.owner == bindparam("b_owner"),
                                      TOMBS.c.path == bindparam("b_path"))
                  .values(version=bindparam("version"), deleted_at=bindparam("deleted_at")),
                  moved)
    made = [{"owner": o, "path": p, "version": st.tomb[0], "deleted_at": st.tomb[1]}
            for (o, p), st in states.items() if st.old_tomb is None and st.tomb is not None]
    insert_rows(s, insert(TOMBS), made)


def _prune_folders(s, emptied):
    """Remove the folders of deleted files that hold no file any more, deepest first. A
    folder found busy keeps its ancestors (they hold it); one seen before was dealt with,
    its ancestors too."""
    seen = set()
    for owner, path in emptied:
        for folder in reversed(ancestors(path)):
            if (owner, folder) in seen:
                break
            seen.add((owner, folder))
            taken = s.scalar(select(FILES.c.id).where(
                FILES.c.owner == owner, FILES.c.path >= folder + "/",
                FILES.c.path < upper_bound(folder)).limit(1))
            if taken is not None:
                break
            s.execute(delete(Folder).where(Folder.owner == owner, Folder.path == folder))


def _add_usage(s, usage):
    """Each owner's file count and bytes moved by its summed deltas, owners in order (two
    reports at once lock the rows in the same order)."""
    rows = [{"owner": owner, "file_count": files, "total_bytes": size}
            for owner, (files, size) in sorted(usage.items())]
    stmt = dialect_insert(s, OwnerUsage)
    insert_rows(s, stmt.on_conflict_do_update(index_elements=[OwnerUsage.owner], set_={
        "file_count": OwnerUsage.file_count + stmt.excluded.file_count,
        "total_bytes": OwnerUsage.total_bytes + stmt.excluded.total_bytes}), rows)


def _delete_in(s, column, ids):
    for chunk in pages(sorted(ids)):
        s.execute(delete(column.table).where(column.in_(chunk)))
