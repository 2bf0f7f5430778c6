"""Audit events from the syslog receiver stored in the database a batch at a time.

Every upload sends the admin server one access event. Stored one by one, each cost a hop to
a worker thread and a transaction: more CPU than applying the upload's catalogue record.
Here events gather for ``delay`` seconds (the GUI's live panel polls every few seconds
anyway) and go in one transaction; a batch the database refuses is stored event by event
(``AdminService.record_events``), so one bad event loses only itself.
"""
import asyncio
import logging

log = logging.getLogger("securifile.admin.events")


class EventRecorder:
    def __init__(self, record_events, delay=0.5, batch=500, max_pending=20_000):
        self.record_events = record_events  # (list of events) -> None, in a worker thread
        self.delay = delay
        self.batch = batch
        self.max_pending = max_pending
        self.failed = 0  # events lost to a failure of the whole database
        self._pending = []
        self._writer = None

    async def add(self, event):
        """Queue ``event``; waits only while a backlog beyond ``max_pending`` is written
        (back-pressure on the sender when the database cannot keep up)."""
        self._pending.append(event)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write(self.delay))
        if len(self._pending) > self.max_pending:
            await asyncio.shield(self._writer)

    async def flush(self):
        """Write what is queued now (at shutdown)."""
        if self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        await self._write(0)

    async def _write(self, delay, rounds=100):
        await asyncio.sleep(delay)  # let a batch gather
        for _ in range(rounds):  # events that come meanwhile go in the next round
            if not self._pending:
                return
            batch, self._pending = self._pending[:self.batch], self._pending[self.batch:]
            try:
                await asyncio.to_thread(self.record_events, batch)
            except Exception:
                self.failed += len(batch)
                log.exception("%d audit events could not be stored", len(batch))
        if self._pending:  # a long backlog: a writer of its own goes on with it
            self._writer = asyncio.ensure_future(self._write(0))
