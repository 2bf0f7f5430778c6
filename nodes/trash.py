"""Big files given up (deleted, replaced by a new version, an upload abandoned) are freed by
a worker thread, not on the event loop.

Why: freeing a big file's blocks is the file system's work for as long as the file is big
(ext4 here: 0.6 s for a synced GiB, over 2 s with three nodes deleting their copies of one
at once on the shared disk), and it happens in whatever system call drops the last name:
``unlink``, or a ``rename`` over the old version. Done on the event loop, a big delete held
every node's loop for seconds, their heartbeats went unanswered, and a node counted itself
cut off from the majority and refused requests (``scripts/bench`` caught it: 503s for small
uploads right after a 1 GiB file was deleted at r=2). So the event loop only moves or links
the name into ``ROOT/trash`` (quick and atomic) and a worker thread unlinks it there. What
lies in ``trash`` belongs to nobody: the next start removes it. Small files are unlinked at
once, cheaper than the hand-off. No HTTP here.
"""
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path

BIG = 8 << 20  # files at least this big are freed behind the event loop
_FREER = ThreadPoolExecutor(1, thread_name_prefix="trash")


class Trash:
    """``ROOT/trash``: names taken from the store, their bytes freed by a worker thread."""

    def __init__(self, trash_dir):
        self.dir = Path(trash_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._prefix = f"tr-{uuid.uuid4().hex[:8]}-"  # unique for this process's life
        self._serial = count()

    def sweep(self):
        """Free what a previous run left, behind (a crash may have left GiBs: the start must
        not wait for them)."""
        for p in self.dir.iterdir():
            self._free(p)

    def remove(self, path, size):
        """Take ``path``'s name away now; a big file's bytes are freed behind. FileNotFoundError
        (or NotADirectoryError) as ``unlink`` raises them."""
        if size < BIG:
            os.unlink(path)
            return
        target = self._name()
        os.rename(path, target)
        self._free(target)

    def replacing(self, path, size):
        """Before a rename over ``path``: a second name for the old version, so that the
        rename does not free it; call the returned function once the rename is done (or
        failed) to free it behind. A no-op for a small or missing file."""
        if size < BIG:
            return lambda: None
        target = self._name()
        try:
            os.link(path, target)
        except FileNotFoundError:
            return lambda: None
        return lambda: self._free(target)

    def _name(self):
        return self.dir / f"{self._prefix}{next(self._serial)}"

    def _free(self, path):
        _FREER.submit(_unlink_quietly, path)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass  # gone already; what is left is swept at the next start
