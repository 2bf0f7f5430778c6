"""Reports to the admin server: file changes, status changes and storage samples.

Events wait in a queue on the node's disk and go out in batches over the node's kept
mutual-TLS connections (its PeerClient: no handshake per report). A batch's
id is made of its first and last event ids, and a batch sent without an answer is sent
again as it was (its range is kept on disk, across a restart too), not with the events
queued since: the admin server may have applied it, and it applies a report id once.
The admin server being down only makes the queue longer (up to a bound, beyond which the
oldest storage samples are dropped).
"""
import json
import logging
import sqlite3
import time

from tornado.ioloop import PeriodicCallback

from securifile.common.admin_urls import AdminURLs

from .peerclient import PeerError

log = logging.getLogger("securifile.reporter")
BATCH = 500
MAX_QUEUED = 200_000


class Reporter:
    def __init__(self, name, db_path, admin_url, client, clock=time.time, timeout=10.0):
        self.name = name
        # One URL or every admin server instance: a report goes to the first that takes it.
        self.admin = AdminURLs(admin_url)
        self.client = client
        self.clock = clock
        self.timeout = timeout
        self._db = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # With the write-ahead log this survives a crash of the process; only a power cut can
        # lose the newest events, where a sync per queued event would cost every upload one.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "kind TEXT NOT NULL, event TEXT NOT NULL)")
        # The batch on its way (one row at most): sent again as it was until answered.
        self._db.execute("CREATE TABLE IF NOT EXISTS sending (first INTEGER NOT NULL, "
                         "last INTEGER NOT NULL)")
        self.dropped = 0
        self.sent = 0
        self._timers = []

    def _put(self, event):
        self._db.execute("INSERT INTO queue (kind, event) VALUES (?, ?)",
                         (event["type"], json.dumps(event)))

    def file_changed(self, loc, under_replicated=False):
        record = loc.to_json()
        record["under_replicated"] = under_replicated
        self._put({"type": "file", "record": record})

    def quota_done(self, reservation_id):
        """An upload's quota reservation ends when the admin server applies this, which it
        does after the file's own event (queued first): the file is counted by then."""
        self._put({"type": "quota_done", "id": reservation_id})

    def status_changed(self, subject, old, new, detail=""):
        self._put({"type": "status", "subject": subject, "old": old, "new": new,
                   "detail": detail, "at": self.clock()})

    def sample(self, used, available):
        self._put({"type": "sample", "t": self.clock(), "used": used, "available": available})
        self._bound()

    def _bound(self):
        queued = self.queued()
        if queued > MAX_QUEUED:
            n = self._db.execute(
                "DELETE FROM queue WHERE id IN (SELECT id FROM queue WHERE kind = 'sample' "
                "ORDER BY id LIMIT ?)", (queued - MAX_QUEUED,)).rowcount
            self.dropped += n
            log.warning("report queue full: dropped %d old storage samples", n)

    def queued(self):
        return self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    async def run_once(self):
        """Send queued events in batches until the queue is empty or the admin fails."""
        for _ in range(1000):
            first, last, rows = self._next_batch()
            if not rows:
                return True
            report = {"id": f"{self.name}:{first}-{last}", "server": self.name,
                      "events": [json.loads(e) for _id, e in rows]}
            try:
                await self.client.call_admin(self.admin, "/api/v1/reports", "POST",
                                             {"reports": [report]}, self.timeout)
            except PeerError as e:
                log.debug("admin server did not take the report (will resend): %s", e)
                return False
            # (A crash between the two leaves a range of deleted rows: nothing to resend.)
            self._db.execute("DELETE FROM queue WHERE id <= ?", (last,))
            self._db.execute("DELETE FROM sending WHERE first = ? AND last = ?", (first, last))
            self.sent += len(rows)
        return False

    def _next_batch(self):
        """(first id, last id, rows): the batch sent last without an answer, the same range
        again (its id unchanged even if the bound dropped samples from it); otherwise the
        next ``BATCH`` events, noted as sending before they go."""
        pending = self._db.execute("SELECT first, last FROM sending").fetchone()
        if pending is not None:
            rows = self._db.execute("SELECT id, event FROM queue WHERE id BETWEEN ? AND ? "
                                    "ORDER BY id", pending).fetchall()
            if rows:  # (unless the bound dropped them all: then they are gone)
                return pending[0], pending[1], rows
            self._db.execute("DELETE FROM sending")
        rows = self._db.execute("SELECT id, event FROM queue ORDER BY id LIMIT ?",
                                (BATCH,)).fetchall()
        if not rows:
            return None, None, rows
        first, last = rows[0][0], rows[-1][0]
        self._db.execute("INSERT INTO sending (first, last) VALUES (?, ?)", (first, last))
        return first, last, rows

    def start(self, report_interval, sample_interval, usage):
        """Send every ``report_interval`` s; sample ``usage()`` every ``sample_interval`` s."""
        def take_sample():
            try:
                self.sample(*usage())
            except Exception:
                log.exception("storage sample failed")

        async def send():
            try:
                await self.run_once()
            except Exception:
                log.exception("report round failed")

        take_sample()
        self._timers = [PeriodicCallback(send, report_interval * 1000),
                        PeriodicCallback(take_sample, sample_interval * 1000)]
        for t in self._timers:
            t.start()

    def stop(self):
        for t in self._timers:
            t.stop()
