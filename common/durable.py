"""Durable writes: after a file is renamed into place, its folder is synced too, or a crash
can forget the rename (the file's own fsync does not cover the directory entry)."""
import asyncio
import os


def fsync_dir(path):
    """Flush the directory ``path`` (its entries: renames and new names) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FolderSyncer:
    """Folder fsyncs on a worker thread, shared by the renames that wait for them.

    A caller renames, then awaits ``sync(folder)``. It joins the next fsync of that folder
    that has not started yet (one starts as soon as the running one ends), so every caller's
    rename comes before the fsync it waits for: each is covered, and concurrent uploads into
    one folder share one fsync (group commit) instead of queueing one each on the event
    loop. ``sync_folder`` is the blocking fsync (a parameter so tests can count and hold it).
    """

    def __init__(self, sync_folder=fsync_dir):
        self.sync_folder = sync_folder
        self._running = {}  # folder -> the fsync under way
        self._waiting = {}  # folder -> the next fsync, not started: callers join it

    async def sync(self, folder):
        key = os.fspath(folder)
        batch = self._waiting.get(key)
        if batch is None:
            batch = self._waiting[key] = asyncio.get_running_loop().create_future()
            asyncio.ensure_future(self._run(key, batch))
        await asyncio.shield(batch)

    async def _run(self, key, batch):
        running = self._running.get(key)
        if running is not None:
            await asyncio.wait([running])  # its failure is its own callers' to see
        del self._waiting[key]  # from here on, new callers wait for a later fsync
        self._running[key] = batch
        try:
            await asyncio.to_thread(self.sync_folder, key)
        except asyncio.CancelledError:
            batch.cancel()
            raise
        except Exception as e:
            batch.set_exception(e)
            batch.exception()  # marked retrieved: its callers may have gone (clients left)
        else:
            batch.set_result(None)
        finally:
            del self._running[key]
