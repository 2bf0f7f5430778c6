"""Where every file of the cluster lives: each node keeps the whole map on its own disk.

A record names a file's origin, its replicas with their priorities, digest, size and
version. Deletions are tombstones (a newer version marked deleted) so that a stale record
arriving late cannot bring a file back. Every applied change takes the next local sequence
number, which lets peers pull what they missed (``changes_since``).
"""
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from securifile.common.paths import FilePath


@dataclass
class Replica:
    server: str
    priority: int


@dataclass
class Location:
    owner: str
    path: str
    origin: str
    digest: str
    algorithm: str
    size: int
    version: int = 1
    replicas: list = field(default_factory=list)
    modified: float = field(default_factory=time.time)
    deleted: bool = False
    # Holders that missed this version (down during a modification): never served from
    # until a running holder has brought them up to date.
    stale: list = field(default_factory=list)

    @property
    def file_path(self):
        return FilePath(self.owner, self.path)

    @property
    def holders(self):
        """Origin first, then replicas in priority order: the order users are sent to."""
        return [self.origin] + [r.server for r in sorted(self.replicas, key=lambda r: r.priority)]

    @property
    def current_holders(self):
        """Holders with this version, in the order users are sent to."""
        return [h for h in self.holders if h not in self.stale]

    def newer_than(self, other):
        """Total order on versions of one file; ties break deterministically."""
        return (self.version, self.modified, self.origin, self.deleted) > (
            other.version, other.modified, other.origin, other.deleted)

    def to_json(self):
        d = asdict(self)
        d["replicas"] = [asdict(r) for r in self.replicas]
        return d

    @classmethod
    def from_json(cls, d):
        d = dict(d)
        d["replicas"] = [Replica(r["server"], int(r["priority"])) for r in d.get("replicas", [])]
        d.pop("seq", None)
        return cls(**d)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS locations (
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    record TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (owner, path)
);
CREATE INDEX IF NOT EXISTS locations_seq ON locations (seq);
CREATE TABLE IF NOT EXISTS copies (
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    -- what the file looked like when ``digest`` was computed: (size, mtime, ctime, inode)
    stat_key TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (owner, path)
);
"""


class LocationMap:
    """The persistent location map of one node (SQLite, write-ahead log)."""

    def __init__(self, db_path):
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(copies)")}
        if "stat_key" not in columns:  # maps written before the digest cache
            self._db.execute("ALTER TABLE copies ADD COLUMN stat_key TEXT NOT NULL DEFAULT ''")
        self._lock = threading.Lock()
        self._seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM locations").fetchone()[0]

    @property
    def seq(self):
        return self._seq

    def close(self):
        self._db.close()

    @contextmanager
    def transaction(self):
        """Many changes in one SQLite transaction: one commit, not one per statement."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def get(self, fp, include_deleted=False):
        row = self._db.execute(
            "SELECT record FROM locations WHERE owner = ? AND path = ?", (fp.owner, fp.rel)
        ).fetchone()
        if row is None:
            return None
        loc = Location.from_json(json.loads(row[0]))
        if loc.deleted and not include_deleted:
            return None
        return loc

    def get_key(self, owner, path):
        return self.get(FilePath(owner, path))

    def apply(self, loc):
        """Store ``loc`` if it is newer than what is known; True when it changed the map."""
        with self._lock:
            current = self.get(loc.file_path, include_deleted=True)
            if current is not None and not loc.newer_than(current):
                return False
            self._seq += 1
            self._db.execute(
                "INSERT OR REPLACE INTO locations (owner, path, record, deleted, seq) "
                "VALUES (?, ?, ?, ?, ?)",
                (loc.owner, loc.path, json.dumps(loc.to_json()), int(loc.deleted), self._seq),
            )
            return True

    def list_prefix(self, owner, folder=""):
        """Live files of ``owner`` under ``folder`` ('' for the whole namespace), by path."""
        if folder:
            lo = folder + "/"
            hi = folder + "0"  # '0' sorts right after '/'
            rows = self._db.execute(
                "SELECT record FROM locations WHERE owner = ? AND path >= ? AND path < ? "
                "AND deleted = 0 ORDER BY path", (owner, lo, hi))
        else:
            rows = self._db.execute(
                "SELECT record FROM locations WHERE owner = ? AND deleted = 0 ORDER BY path",
                (owner,))
        return [Location.from_json(json.loads(r[0])) for r in rows]

    def has_folder(self, fp):
        """True if any live file lies under ``fp`` taken as a folder."""
        lo, hi = fp.rel + "/", fp.rel + "0"
        return self._db.execute(
            "SELECT 1 FROM locations WHERE owner = ? AND path >= ? AND path < ? AND deleted = 0 "
            "LIMIT 1", (fp.owner, lo, hi)).fetchone() is not None

    def file_ancestor(self, fp):
        """The first ancestor of ``fp`` that is a live file, or None."""
        segs = fp.segments
        for i in range(1, len(segs)):
            anc = FilePath(fp.owner, "/".join(segs[:i]))
            if self.get(anc) is not None:
                return anc
        return None

    def changes_since(self, seq, limit=1000):
        """Records changed after local sequence ``seq``, oldest first, with their seq."""
        rows = self._db.execute(
            "SELECT record, seq FROM locations WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        out = []
        for record, s in rows:
            d = json.loads(record)
            d["seq"] = s
            out.append(d)
        return out

    def held_by(self, server):
        """Live records that name ``server`` as origin or replica."""
        out = []
        for (record,) in self._db.execute("SELECT record FROM locations WHERE deleted = 0"):
            loc = Location.from_json(json.loads(record))
            if server in loc.holders:
                out.append(loc)
        return out

    def shared_with(self, me, other):
        """Live records that name both ``me`` and ``other`` as holders: what ``me`` can check
        ``other``'s copies against."""
        return [loc for loc in self.held_by(other) if me in loc.holders]

    def purge_tombstones(self, up_to_seq):
        """Drop tombstones whose change every peer has pulled (local seq <= ``up_to_seq``)."""
        return self._db.execute("DELETE FROM locations WHERE deleted = 1 AND seq <= ?",
                                (up_to_seq,)).rowcount

    # The copies this node itself holds on disk, with the version each one is of: a holder
    # whose copy is older than the location record must not serve it.

    def record_copy(self, fp, version, digest, size, stat_key=""):
        self._db.execute(
            "INSERT OR REPLACE INTO copies (owner, path, version, digest, size, stat_key) "
            "VALUES (?, ?, ?, ?, ?, ?)", (fp.owner, fp.rel, version, digest, size, stat_key))

    def copy_record(self, fp):
        """(version, digest, stat_key) of this node's copy, or None."""
        return self._db.execute(
            "SELECT version, digest, stat_key FROM copies WHERE owner = ? AND path = ?",
            (fp.owner, fp.rel)).fetchone()

    def update_copy_digest(self, fp, digest, stat_key):
        self._db.execute("UPDATE copies SET digest = ?, stat_key = ? WHERE owner = ? AND path = ?",
                         (digest, stat_key, fp.owner, fp.rel))

    def has_copies(self):
        return self._db.execute("SELECT 1 FROM copies LIMIT 1").fetchone() is not None

    def copy_version(self, fp):
        row = self._db.execute(
            "SELECT version FROM copies WHERE owner = ? AND path = ?", (fp.owner, fp.rel)).fetchone()
        return row[0] if row else None

    def forget_copy(self, fp):
        self._db.execute("DELETE FROM copies WHERE owner = ? AND path = ?", (fp.owner, fp.rel))
