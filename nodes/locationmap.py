"""Where every file of the cluster lives: each node keeps the whole map on its own disk.

A record names a file's origin, its replicas with their priorities, digest, size and
version. Deletions are tombstones (a newer version marked deleted) so that a stale record
arriving late cannot bring a file back. Every applied change takes the next local sequence
number, which lets peers pull what they missed (``changes_since``). A record also carries
its coordinator's own counter (``cseq``), so that a peer pulling can say which records it
has already had pushed to it (``known``) and be sent only the others.

Besides the JSON record, each row keeps in columns what ``newer_than`` compares (version,
modified, origin) and what a challenge needs (digest, algorithm, size), and a ``holders``
table indexes live records by server: applying a record that is already known, and listing
what two servers both hold (a challenge of 100,000 files), then parse no JSON.
"""
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

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
    # Orders the records of one path: strictly greater for every change (a new version, a
    # delete, or a change of holders), taken from the write lock's reservations on a
    # majority, so two different records never carry the same stamp. ``coordinator`` is the
    # node that made the change. Records written before stamps existed: stamp = version.
    stamp: int = 0
    coordinator: str = ""
    # The coordinator's own number for this record (``nodes/pushed.py``): which of its
    # records a peer was pushed (``changes_since``'s ``known``). 0: not numbered (a record
    # from before the numbers), never taken as known. Kept in a column, never in the record
    # JSON (which a node of an earlier version must still read): a push carries the numbers
    # beside its records, a pull that names what it knows gets them in each record.
    cseq: int = 0

    def __post_init__(self):
        if not self.stamp:
            self.stamp = self.version
        if not self.coordinator:
            self.coordinator = self.origin

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

    @property
    def order(self):
        """What ``newer_than`` compares: the stamp; the rest only orders legacy records."""
        return (self.stamp, self.coordinator, self.version, self.modified, self.deleted)

    def newer_than(self, other):
        """Total order on versions of one file; ties break deterministically."""
        return self.order > other.order

    def to_json(self):
        # Spelled out rather than dataclasses.asdict, which deep-copies every field: this
        # runs for every record applied or sent, and asdict was ten times slower.
        return {"owner": self.owner, "path": self.path, "origin": self.origin,
                "digest": self.digest, "algorithm": self.algorithm, "size": self.size,
                "version": self.version,
                "replicas": [{"server": r.server, "priority": r.priority} for r in self.replicas],
                "modified": self.modified, "deleted": self.deleted, "stale": list(self.stale),
                "stamp": self.stamp, "coordinator": self.coordinator}

    @classmethod
    def from_json(cls, d):
        d = dict(d)
        d["replicas"] = [Replica(r["server"], int(r["priority"])) for r in d.get("replicas", [])]
        d.pop("seq", None)
        return cls(**d)


class FileVersion(NamedTuple):
    """One version of one file: as much of its record as a challenge needs."""

    owner: str
    path: str
    version: int
    digest: str
    algorithm: str
    size: int
    other_stale: bool = False  # the record names the other server stale (it said so itself)

    @property
    def file_path(self):
        return FilePath(self.owner, self.path)


class CopyRecord(NamedTuple):
    """This node's own copy of a file: the version, the committed digest, and the cache of
    the last hash of its bytes with the stat key it was computed under."""

    version: int
    digest: str
    disk_digest: str
    stat_key: str


def _copied(loc):
    return (loc.version, loc.modified, loc.origin, loc.digest, loc.algorithm, loc.size,
            loc.stamp, loc.coordinator, loc.cseq)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS locations (
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    record TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    -- copied out of ``record``: what Location.newer_than compares, and what a challenge needs
    version INTEGER NOT NULL DEFAULT 0,
    modified REAL NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL DEFAULT '',
    algorithm TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    stamp INTEGER NOT NULL DEFAULT 0,
    coordinator TEXT NOT NULL DEFAULT '',
    cseq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, path)
);
CREATE INDEX IF NOT EXISTS locations_seq ON locations (seq);
-- The holders (origin and replicas) of each live record; tombstones have none.
CREATE TABLE IF NOT EXISTS holders (
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    server TEXT NOT NULL,
    stale INTEGER NOT NULL,  -- named in the record's stale list: missed this version
    PRIMARY KEY (owner, path, server)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holders_server ON holders (server);
-- How far this node has read each peer's change feed: a restart goes on from there.
CREATE TABLE IF NOT EXISTS pulled (
    peer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS copies (
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,  -- committed: what the bytes must hash to; never a re-hash
    size INTEGER NOT NULL,
    -- what the file looked like when ``disk_digest`` was computed: (size, mtime, ctime, inode)
    stat_key TEXT NOT NULL DEFAULT '',
    disk_digest TEXT NOT NULL DEFAULT '',  -- the last hash of the bytes on disk (a cache)
    -- CRC-32C per MiB of the bytes the digest was checked against (``chunksums``), valid
    -- only for the file whose stat key is ``sums_key``
    chunk_sums BLOB,
    sums_key TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (owner, path)
);
-- Small facts of this node's own loops, such as where the scrubber stopped.
CREATE TABLE IF NOT EXISTS state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


# 1: columns copied out of the record, and the holders table; 2: stamp and coordinator
SCHEMA_VERSION = 2
_COPIED_COLUMNS = {"version": "INTEGER NOT NULL DEFAULT 0", "modified": "REAL NOT NULL DEFAULT 0",
                   "origin": "TEXT NOT NULL DEFAULT ''", "digest": "TEXT NOT NULL DEFAULT ''",
                   "algorithm": "TEXT NOT NULL DEFAULT ''", "size": "INTEGER NOT NULL DEFAULT 0",
                   "stamp": "INTEGER NOT NULL DEFAULT 0",
                   "coordinator": "TEXT NOT NULL DEFAULT ''", "cseq": "INTEGER NOT NULL DEFAULT 0"}
_IN_CHUNK = 500  # names per "IN (...)" query, well under SQLite's limit on parameters


class LocationMap:
    """The persistent location map of one node (SQLite, write-ahead log)."""

    def __init__(self, db_path):
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Held by every write, so that no statement of another thread lands inside a
        # transaction (the connection is shared); re-entrant, as apply() nests transactions.
        self._lock = threading.RLock()
        self._upgrade()
        self._seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM locations").fetchone()[0]

    def _upgrade(self):
        """Create the tables, or bring a map written by an earlier version up to date."""
        locations_existed = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'locations'").fetchone()
        if locations_existed:  # columns that CREATE TABLE IF NOT EXISTS will not add
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(locations)")}
            for name, decl in _COPIED_COLUMNS.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE locations ADD COLUMN {name} {decl}")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(copies)")}
        if "stat_key" not in columns:  # maps written before the digest cache
            self._db.execute("ALTER TABLE copies ADD COLUMN stat_key TEXT NOT NULL DEFAULT ''")
        if self._db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            with self.transaction():
                self._db.execute("DELETE FROM holders")
                rows = self._db.execute("SELECT record FROM locations").fetchall()
                for (record,) in rows:
                    loc = Location.from_json(json.loads(record))
                    self._db.execute(
                        "UPDATE locations SET version = ?, modified = ?, origin = ?, digest = ?, "
                        "algorithm = ?, size = ?, stamp = ?, coordinator = ?, cseq = ? "
                        "WHERE owner = ? AND path = ?",
                        (*_copied(loc), loc.owner, loc.path))
                    self._index_holders(loc)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if "disk_digest" not in columns:
            self._split_disk_digest()
        if "chunk_sums" not in columns:  # maps written before the read checksums
            self._db.execute("ALTER TABLE copies ADD COLUMN chunk_sums BLOB")
            self._db.execute("ALTER TABLE copies ADD COLUMN sums_key TEXT NOT NULL DEFAULT ''")

    def _split_disk_digest(self):
        """Maps written before the cache had its own column kept re-hashes in ``digest``.

        That value becomes the cache (it is valid for its stat key); the committed digest
        is taken back from the location record wherever this copy is of the record's version.
        """
        with self.transaction():
            self._db.execute("ALTER TABLE copies ADD COLUMN disk_digest TEXT NOT NULL DEFAULT ''")
            self._db.execute("UPDATE copies SET disk_digest = digest")
            self._db.execute(
                "UPDATE copies SET digest = (SELECT l.digest FROM locations l "
                "WHERE l.owner = copies.owner AND l.path = copies.path) "
                "WHERE EXISTS (SELECT 1 FROM locations l WHERE l.owner = copies.owner "
                "AND l.path = copies.path AND l.version = copies.version AND l.deleted = 0 "
                "AND l.digest != '')")

    @property
    def seq(self):
        return self._seq

    def close(self):
        self._db.close()

    @contextmanager
    def transaction(self):
        """Changes made inside (by this thread) commit together, or not at all.

        Nests: inside another transaction it is a savepoint. Many changes in one
        transaction also cost one commit instead of one each.
        """
        with self._lock:
            self._db.execute("SAVEPOINT batch")
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK TO batch")
                self._db.execute("RELEASE batch")
                raise
            self._db.execute("RELEASE batch")

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
            # The order columns, not the JSON: most records a peer sends are known already.
            row = self._db.execute(
                "SELECT stamp, coordinator, version, modified, deleted FROM locations "
                "WHERE owner = ? AND path = ?", (loc.owner, loc.path)).fetchone()
            if row is not None and not loc.order > (*row[:4], bool(row[4])):
                return False
            with self.transaction():
                self._seq += 1
                self._db.execute(
                    "INSERT OR REPLACE INTO locations "
                    "(owner, path, record, deleted, seq, version, modified, origin, digest, "
                    "algorithm, size, stamp, coordinator, cseq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (loc.owner, loc.path, json.dumps(loc.to_json()), int(loc.deleted), self._seq,
                     *_copied(loc)))
                self._db.execute("DELETE FROM holders WHERE owner = ? AND path = ?",
                                 (loc.owner, loc.path))
                self._index_holders(loc)
            return True

    def _index_holders(self, loc):
        if not loc.deleted:
            self._db.executemany(
                "INSERT OR IGNORE INTO holders (owner, path, server, stale) VALUES (?, ?, ?, ?)",
                [(loc.owner, loc.path, h, int(h in loc.stale)) for h in loc.holders])

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

    def changes_since(self, seq, limit=1000, known=None):
        """Records changed after local sequence ``seq``, oldest first, with their seq.

        ``known``: {coordinator: (lo, hi)}, the records of that coordinator whose ``cseq``
        is above lo and at most hi are the caller's already (pushed to it); each of those
        comes as ``{"seq": s}`` alone, so that pages keep their length and the caller's
        cursor moves past it without the record being sent again. With ``known`` (even
        empty) each record also carries its ``cseq``."""
        rows = self._db.execute(
            "SELECT record, seq, coordinator, cseq FROM locations WHERE seq > ? ORDER BY seq "
            "LIMIT ?", (seq, limit))
        out = []
        for record, s, coordinator, cseq in rows:
            span = known.get(coordinator) if known else None
            if span is not None and span[0] < cseq <= span[1]:
                out.append({"seq": s})
                continue
            d = json.loads(record)
            d["seq"] = s
            if known is not None:
                d["cseq"] = cseq
            out.append(d)
        return out

    def held_by(self, server):
        """Live records that name ``server`` as origin or replica."""
        return self._records(
            "SELECT l.record FROM holders h JOIN locations l ON l.owner = h.owner AND "
            "l.path = h.path WHERE h.server = ? AND l.deleted = 0 ORDER BY h.owner, h.path",
            (server,))

    def shared_with(self, me, other):
        """Live records that name both ``me`` and ``other`` as holders: what ``me`` can check
        ``other``'s copies against."""
        return self._records(
            "SELECT l.record FROM holders a "
            "JOIN holders b ON b.owner = a.owner AND b.path = a.path AND b.server = ? "
            "JOIN locations l ON l.owner = a.owner AND l.path = a.path "
            "WHERE a.server = ? AND l.deleted = 0 ORDER BY a.owner, a.path", (me, other))

    def checkable(self, me, other):
        """Files shared with ``other`` (as ``shared_with``) of which ``me`` holds a copy of the
        current version and is not marked stale: the copies ``me`` can judge ``other``'s by."""
        rows = self._db.execute(
            "SELECT l.owner, l.path, l.version, l.digest, l.algorithm, l.size, a.stale "
            "FROM holders a "
            "JOIN holders b ON b.owner = a.owner AND b.path = a.path AND b.server = ? "
            "JOIN locations l ON l.owner = a.owner AND l.path = a.path "
            "JOIN copies c ON c.owner = l.owner AND c.path = l.path AND c.version = l.version "
            "WHERE a.server = ? AND b.stale = 0 AND l.deleted = 0 ORDER BY a.owner, a.path",
            (me, other))
        return list(map(FileVersion._make, rows))

    def needing_repair(self, wanted, lost, running, limit):
        """Live records that lack a copy: fewer than ``wanted`` current holders, a holder in
        ``lost``, or a stale holder in ``running`` (it can be sent the current copy)."""
        lost, running = sorted(lost), sorted(running)
        lost_in = ",".join("?" * len(lost)) or "NULL"
        running_in = ",".join("?" * len(running)) or "NULL"
        return self._records(
            "SELECT l.record FROM locations l WHERE l.deleted = 0 AND ("
            "  (SELECT COUNT(*) FROM holders h WHERE h.owner = l.owner AND h.path = l.path "
            "   AND h.stale = 0) < ? "
            "  OR EXISTS (SELECT 1 FROM holders h WHERE h.owner = l.owner AND h.path = l.path "
            f"   AND (h.server IN ({lost_in}) OR (h.stale = 1 AND h.server IN ({running_in}))))"
            ") LIMIT ?", (wanted, *lost, *running, limit))

    def _records(self, sql, params):
        return [Location.from_json(json.loads(r)) for (r,) in self._db.execute(sql, params)]

    def pull_cursors(self):
        """``{peer: seq}``: the last of each peer's sequence numbers whose changes are applied."""
        return dict(self._db.execute("SELECT peer, seq FROM pulled"))

    def save_pull_cursor(self, peer, seq):
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO pulled (peer, seq) VALUES (?, ?)",
                             (peer, seq))

    def purge_tombstones(self, up_to_seq):
        """Drop tombstones whose change every peer has pulled (local seq <= ``up_to_seq``)."""
        with self._lock:
            return self._db.execute("DELETE FROM locations WHERE deleted = 1 AND seq <= ?",
                                    (up_to_seq,)).rowcount

    # The copies this node itself holds on disk, with the version each one is of: a holder
    # whose copy is older than the location record must not serve it.

    def record_copy(self, fp, version, digest, size, stat_key="", sums=None):
        """A copy just written and checked: ``digest`` is both committed and what the disk
        holds; ``sums`` (packed ``ChunkSums``), when given, are of the file at ``stat_key``."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO copies (owner, path, version, digest, size, stat_key, "
                "disk_digest, chunk_sums, sums_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (fp.owner, fp.rel, version, digest, size, stat_key, digest, sums,
                 stat_key if sums is not None and stat_key else ""))

    def chunk_sums(self, fp, stat_key):
        """The packed read checksums of this node's copy of ``fp`` if they were taken from the
        file whose stat key is ``stat_key`` (the one a reader has open), else None."""
        row = self._db.execute(
            "SELECT chunk_sums FROM copies WHERE owner = ? AND path = ? AND sums_key = ? "
            "AND sums_key != ''", (fp.owner, fp.rel, stat_key)).fetchone()
        return row[0] if row else None

    def set_chunk_sums(self, fp, version, stat_key, sums):
        """Checksums taken during a whole read that matched the digest of ``version``: kept
        if the copy is still of that version (else the read raced a new one)."""
        with self._lock:
            self._db.execute(
                "UPDATE copies SET chunk_sums = ?, sums_key = ? WHERE owner = ? AND path = ? "
                "AND version = ?", (sums, stat_key, fp.owner, fp.rel, version))

    def clear_chunk_sums(self, fp):
        """Checksums a good copy did not match (the checksums were wrong, not the bytes)."""
        with self._lock:
            self._db.execute("UPDATE copies SET chunk_sums = NULL, sums_key = '' "
                             "WHERE owner = ? AND path = ?", (fp.owner, fp.rel))

    def copy_record(self, fp):
        """CopyRecord of this node's copy, or None."""
        row = self._db.execute(
            "SELECT version, digest, disk_digest, stat_key FROM copies WHERE owner = ? AND path = ?",
            (fp.owner, fp.rel)).fetchone()
        return CopyRecord._make(row) if row else None

    def copy_records(self, fps):
        """``{(owner, rel): CopyRecord}`` for those of ``fps`` held here."""
        by_owner = {}
        for fp in fps:
            by_owner.setdefault(fp.owner, []).append(fp.rel)
        out = {}
        for owner, rels in by_owner.items():
            for start in range(0, len(rels), _IN_CHUNK):
                chunk = rels[start:start + _IN_CHUNK]
                rows = self._db.execute(
                    "SELECT path, version, digest, disk_digest, stat_key FROM copies "
                    f"WHERE owner = ? AND path IN ({','.join('?' * len(chunk))})", (owner, *chunk))
                for path, *rest in rows:
                    out[(owner, path)] = CopyRecord._make(rest)
        return out

    def update_disk_digest(self, fp, digest, stat_key):
        self.update_disk_digests([(fp, digest, stat_key)])

    def update_disk_digests(self, updates):
        """Many ``(fp, disk digest, stat_key)`` at once, in one transaction; the committed
        digest is left as it is."""
        with self.transaction():
            self._db.executemany(
                "UPDATE copies SET disk_digest = ?, stat_key = ? WHERE owner = ? AND path = ?",
                [(digest, key, fp.owner, fp.rel) for fp, digest, key in updates])

    def unclaimed_copies(self, me, limit=1000):
        """Copies on this node's disk that no live record names it a holder of: left by a
        crash during replication (the record never came) or by a repair that lost its race.
        ``[(FilePath, version)]``."""
        rows = self._db.execute(
            "SELECT c.owner, c.path, c.version FROM copies c LEFT JOIN holders h "
            "ON h.owner = c.owner AND h.path = c.path AND h.server = ? "
            "WHERE h.server IS NULL LIMIT ?", (me, limit)).fetchall()
        return [(FilePath(o, p), v) for o, p, v in rows]

    def lost_copies(self, me, limit=1000):
        """Live records that name ``me`` a current holder although it keeps no copy (one
        quarantined while the change could not be published): ``[FilePath]``."""
        rows = self._db.execute(
            "SELECT h.owner, h.path FROM holders h JOIN locations l "
            "ON l.owner = h.owner AND l.path = h.path LEFT JOIN copies c "
            "ON c.owner = h.owner AND c.path = h.path "
            "WHERE h.server = ? AND h.stale = 0 AND l.deleted = 0 AND c.owner IS NULL LIMIT ?",
            (me, limit)).fetchall()
        return [FilePath(o, p) for o, p in rows]

    def copies_ahead(self, limit=1000):
        """Copies of a newer version than their live record: a coordinator that crashed after
        copying a modification but before publishing it. ``[(FilePath, version, digest, size)]``."""
        rows = self._db.execute(
            "SELECT c.owner, c.path, c.version, c.digest, c.size FROM copies c JOIN locations l "
            "ON l.owner = c.owner AND l.path = c.path WHERE l.deleted = 0 AND c.version > l.version "
            "LIMIT ?", (limit,)).fetchall()
        return [(FilePath(o, p), v, d, n) for o, p, v, d, n in rows]
    def copies_after(self, owner, path, limit):
        """Up to ``limit`` of this node's copies after (owner, path), in that order: a slice
        of a scan that goes on from a saved cursor. Rows are (owner, path, version, digest)."""
        return self._db.execute(
            "SELECT owner, path, version, digest FROM copies WHERE (owner, path) > (?, ?) "
            "ORDER BY owner, path LIMIT ?", (owner, path, limit)).fetchall()

    def get_state(self, name, default=None):
        row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_state(self, name, value):
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)",
                             (name, json.dumps(value)))

    def named_holder(self, fps, server):
        """The keys of those of ``fps`` whose live record names ``server`` as a holder."""
        by_owner = {}
        for fp in fps:
            by_owner.setdefault(fp.owner, []).append(fp.rel)
        out = set()
        for owner, rels in by_owner.items():
            for start in range(0, len(rels), _IN_CHUNK):
                chunk = rels[start:start + _IN_CHUNK]
                rows = self._db.execute(
                    "SELECT path FROM holders WHERE server = ? AND owner = ? AND path IN "
                    f"({','.join('?' * len(chunk))})", (server, owner, *chunk))
                out.update((owner, path) for (path,) in rows)
        return out

    def has_copies(self):
        return self._db.execute("SELECT 1 FROM copies LIMIT 1").fetchone() is not None

    def copy_version(self, fp):
        row = self._db.execute(
            "SELECT version FROM copies WHERE owner = ? AND path = ?", (fp.owner, fp.rel)).fetchone()
        return row[0] if row else None

    def forget_copy(self, fp):
        with self._lock:
            self._db.execute("DELETE FROM copies WHERE owner = ? AND path = ?",
                             (fp.owner, fp.rel))
