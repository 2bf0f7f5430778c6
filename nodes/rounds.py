"""A background loop that runs ``run_once`` every ``interval`` seconds until stopped; a
failed round is logged and the next one runs as usual (one bad round is never fatal)."""
import asyncio
import logging


class PeriodicRounds:
    """Mixed into a loop that has ``run_once()``, ``interval`` and a ``round_name`` for the
    log (repair, purge)."""

    _task = None
    round_name = "background"

    def start(self):
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self):
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception:
                logging.getLogger(f"securifile.{self.round_name}").exception(
                    "%s round failed", self.round_name)

    def stop(self):
        if self._task is not None:
            self._task.cancel()
