"""Files on this node's disk that no copy record names: what a kill between two steps leaves.

A copy is forgotten before its file goes (``StorageNode._drop_local``, the quarantine), so
that a peer's challenge never finds a record without its file and fails the node. A node
killed between the two keeps bytes that nothing names: no read, scrub or challenge looks at
them again, and they hold disk space for good. The sweep finds them as Swift's replicator
finds leftovers: a walk of the disk, each file checked against the records. The walk runs in
a thread; each file is judged and removed on the event loop, where no commit interleaves,
and only when no write of it is under way (an upload renames its file in before it records
the copy), it has not been modified for ``grace`` seconds, and the file is deleted, or this
node no holder of it or a stale one. The thread also drops the files that have a copy record
(one query per batch), so the event loop judges only the few candidates, never a whole
batch in one stretch.
"""
import asyncio
import logging
import os
import time

from securifile.common.errors import ApiError
from securifile.common.paths import FilePath

from .quarantine import write_under_way

log = logging.getLogger("securifile.orphans")
BATCH = 500  # files walked per hand-off from the walking thread


def _walk(store):
    """Batches of (owner, rel) of the files on the store's disk."""
    batch = []
    for owner, rel, _st in store.stored_files():
        batch.append((owner, rel))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _next_candidates(batches, locations):
    """In the walking thread: the next batch's files without a copy record (None: done)."""
    batch = next(batches, None)
    if batch is None:
        return None
    fps = [FilePath(owner, rel) for owner, rel in batch]
    held = locations.copy_records(fps)
    return [fp for fp in fps if (fp.owner, fp.rel) not in held]


def _is_orphan(node, fp, now, grace):
    """Judged on the event loop: no copy record, no write under way, old enough, and no live
    record naming this node a current holder: such bytes (a commit killed before its record,
    a location map lost) may be the file's last copy, and the repair loop renames a fresh
    copy over them anyway."""
    if node.locations.copy_record(fp) is not None or write_under_way(node, fp):
        return False
    loc = node.locations.get(fp)
    if loc is not None and node.name in loc.current_holders:
        return False
    try:
        return os.stat(node.store.path_for(fp)).st_mtime <= now - grace
    except (FileNotFoundError, NotADirectoryError, ApiError):
        return False


async def sweep_orphans(node, grace, clock=time.time, stopping=lambda: False):
    """Remove the files no copy record names (see the module's docstring); how many."""
    batches = _walk(node.store)
    removed = 0
    try:
        while not stopping():
            candidates = await asyncio.to_thread(_next_candidates, batches, node.locations)
            if candidates is None:
                break
            now = clock()
            for fp in candidates:
                if _is_orphan(node, fp, now, grace) and node.store.delete(fp):
                    removed += 1
                    log.warning("removed %s: no copy record names it (left by an "
                                "interrupted removal)", fp.full)
    finally:
        try:
            batches.close()
        except ValueError:  # cancelled while the thread walks: the walk ends with its batch
            pass
    return removed
