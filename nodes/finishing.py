"""The writes whose body is whole and which are being committed: a stopping node lets
them end before it closes its peer connections and its location map.

Once its body has arrived, an upload is no longer cut short by its client going away
(``Upload.finish``), so a stop that closes every connection still finds such writes
running. Stopped under them, a write renamed its bytes in and then failed on a closed
connection or map: a 500, and the new bytes at the name without their record (seen when
a test cluster stopped under a folder put the client had given up on).
"""
import asyncio
from contextlib import contextmanager


class FinishingWrites:
    """How many writes are finishing; ``ended(timeout)`` waits for none to be."""

    def __init__(self):
        self.count = 0
        self._none = asyncio.Event()
        self._none.set()

    @contextmanager
    def running(self):
        self.count += 1
        self._none.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._none.set()

    async def ended(self, timeout):
        """True once no write is finishing; False if some still are after ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                await self._none.wait()
        except TimeoutError:
            return False
        return True
