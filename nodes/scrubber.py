"""The scrubber: re-hash this node's copies in the background, at a bounded rate.

Bit rot keeps size and mtime, so nothing but reading the bytes finds it (Swift's object
auditor does the same). The scan goes through the copies table in slices of about a second
of work, from a cursor saved in the location map, so a restart goes on where it stopped;
the hashing runs in a thread, paced by bytes per second and files per second. A copy whose
bytes do not hash to its committed digest is quarantined and published stale
(``quarantine``); one bad item is logged and counted, never fatal to the loop. After each
complete pass, files that no copy record names are swept away (``orphans``).

It scrubs only while the node is running: a node just back is judged by its peers'
challenges first, and a copy damaged while it was away must fail it, not quietly vanish.
"""
import asyncio
import logging
import time
from dataclasses import dataclass

from securifile.common.paths import FilePath

from .challenge import stat_key_of
from .chunksums import ChunkSums
from .orphans import sweep_orphans
from .quarantine import hash_open_file, quarantine_if_bad

log = logging.getLogger("securifile.scrubber")
CURSOR = "scrub_cursor"
SLICE_SECONDS = 1.0  # of work per slice at the files/s limit: the cursor is saved after each


class Pace:
    """Keeps an amount (bytes, files) at or below ``rate`` per second since it started."""

    def __init__(self, rate, clock):
        self.rate = rate
        self.clock = clock
        self.start = clock()
        self.done = 0

    def add(self, amount):
        """Count ``amount`` more; the seconds to wait now so that the rate holds."""
        self.done += amount
        return max(0.0, self.start + self.done / self.rate - self.clock())


@dataclass
class ScrubReport:
    checked: int = 0
    bad: int = 0
    errors: int = 0
    orphans: int = 0  # files no copy record named, removed after a complete pass
    wrapped: bool = False  # the slice reached the last copy: a pass is complete


class _Stopped(Exception):
    pass


class Scrubber:
    def __init__(self, node, bytes_per_second, files_per_second, interval, clock=time.monotonic,
                 sleep=asyncio.sleep, thread_sleep=time.sleep, may_run=lambda: True,
                 orphan_grace=None, wall_clock=time.time):
        self.node = node
        self.orphan_grace = orphan_grace  # None: no sweep of unnamed files
        self.wall_clock = wall_clock  # file times are wall-clock times
        self.may_run = may_run  # False while the node is not running: nothing is scrubbed
        self.bytes_per_second = bytes_per_second
        self.files_per_second = files_per_second
        self.interval = interval  # pause after a complete pass
        self.clock = clock
        self.sleep = sleep
        self.thread_sleep = thread_sleep
        self.totals = ScrubReport()
        self._stopping = False
        self._task = None

    @property
    def slice_files(self):
        return max(1, int(self.files_per_second * SLICE_SECONDS))

    async def run_once(self):
        """Scrub the next slice of copies after the saved cursor."""
        if not self.may_run():
            return ScrubReport()
        locations = self.node.locations
        owner, path = locations.get_state(CURSOR, ["", ""])
        rows = await asyncio.to_thread(locations.copies_after, owner, path, self.slice_files)
        report = ScrubReport(wrapped=len(rows) < self.slice_files)
        files = Pace(self.files_per_second, self.clock)
        data = Pace(self.bytes_per_second, self.clock)
        last = None  # the cursor to save: the last copy scrubbed
        try:
            for owner, path, version, digest in rows:
                if self._stopping or not self.may_run():
                    break
                await self._scrub_one(FilePath(owner, path), version, digest, data, report)
                last = [owner, path]
                await self.sleep(files.add(1))
            else:
                if report.wrapped:
                    last = ["", ""]  # the next slice starts a new pass
        finally:
            if last is not None:
                locations.set_state(CURSOR, last)
            for name in ("checked", "bad", "errors"):
                setattr(self.totals, name, getattr(self.totals, name) + getattr(report, name))
        return report

    async def _scrub_one(self, fp, version, committed, data_pace, report):
        node = self.node
        try:
            loc = node.locations.get(fp)
            algorithm = loc.algorithm if loc is not None else node.algorithm
            path = node.store.path_for(fp)

            def pace(nbytes):
                if self._stopping:
                    raise _Stopped()
                self.thread_sleep(data_pace.add(nbytes))

            sums = ChunkSums()  # read checksums for a copy that has none (``chunksums``)
            digest, st = await asyncio.to_thread(hash_open_file, path, algorithm, pace=pace,
                                                 sums=sums)
            report.checked += 1
            if digest is not None and digest == committed:
                now = node.locations.copy_record(fp)
                if now is not None and now[:2] == (version, committed):
                    # A fresh hash under the stat key it was read with: challenges reuse it,
                    # and reads its checksums, if the copy had none for this very file.
                    key = stat_key_of(st)
                    node.locations.update_disk_digest(fp, digest, key)
                    if node.locations.chunk_sums(fp, key) is None:
                        node.locations.set_chunk_sums(fp, version, key, sums.packed())
                return
            if await quarantine_if_bad(node, fp, f"scrub found {fp.full} changed on disk"):
                report.bad += 1
        except _Stopped:
            raise
        except Exception:
            report.errors += 1
            log.exception("scrubbing %s failed", fp.full)

    async def run_forever(self):
        while not self._stopping:
            try:
                report = await self.run_once()
            except _Stopped:
                return
            except Exception:
                log.exception("scrub slice failed")
                report = None
            if report is not None and report.wrapped:
                await self.sweep()
            if report is None or report.wrapped:
                await self.sleep(self.interval)
            elif not self.may_run():
                await self.sleep(min(self.interval, 1.0))  # until the node runs again
            else:
                await self.sleep(0)

    async def sweep(self):
        """Remove the files no copy record names (``orphans``), while the node runs."""
        if self.orphan_grace is None or not self.may_run():
            return 0
        try:
            removed = await sweep_orphans(self.node, self.orphan_grace, self.wall_clock,
                                          stopping=lambda: self._stopping or not self.may_run())
        except Exception:
            log.exception("the sweep of unnamed files failed")
            return 0
        self.totals.orphans += removed
        return removed

    def start(self):
        self._task = asyncio.ensure_future(self.run_forever())
        return self._task

    async def stop(self):
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, _Stopped):
                pass
