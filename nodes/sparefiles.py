"""Empty files made ahead of time, for uploads to take their temp file from.

Why: creating a file cost 0.3-0.4 ms of kernel time on this node's ext4 (perf:
``find_inode_bit`` and ``recently_deleted``, the inode allocator passing over inodes freed
not long ago, which a store that deletes files always has), against 0.02 ms for a rename.
An upload made its temp file on the event loop before its lock round went out, so every
small upload, and every replica's copy of one, waited for it. A worker thread now creates a
few files ahead in ``ROOT/spare``; an upload takes one and renames it into ``ROOT/tmp``,
where uploads in flight live (a spare holds no byte of anybody's, so what is in ``tmp``
still says what is under way). The spares are swept at start, as ``tmp`` is.
No HTTP here.
"""
import collections
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path

KEEP = 16  # spares made ahead; more uploads at once make theirs on the loop, as before
_MAKER = ThreadPoolExecutor(1, thread_name_prefix="sparefiles")


class SpareFiles:
    """Open, empty files in ``spare_dir`` (created if needed), handed out by ``take``."""

    def __init__(self, spare_dir, keep=KEEP):
        self.dir = Path(spare_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._ready = collections.deque()  # (fd, name): appended by the maker thread
        self._making = None
        # Names unique for this process's life (the folder is swept at each start), so a
        # rename into ``tmp`` never lands on a file another upload is writing.
        self._prefix = f"sp-{uuid.uuid4().hex[:8]}-"
        self._serial = count()

    def sweep(self):
        """Remove the spares a previous run left (call before the first ``take``)."""
        for p in self.dir.iterdir():
            p.unlink(missing_ok=True)

    def take(self, into_dir):
        """(fd, path) of an empty file of its own in ``into_dir``, open for writing: a spare
        renamed there, or one created now when none is ready."""
        try:
            fd, name = self._ready.popleft()
        except IndexError:
            fd = None
        self._refill()
        if fd is None:
            return self._create(Path(into_dir))
        path = Path(into_dir) / name
        try:
            os.rename(self.dir / name, path)
        except OSError:
            os.close(fd)
            return self._create(Path(into_dir))
        return fd, path

    def _refill(self):
        if len(self._ready) < self.keep and (self._making is None or self._making.done()):
            self._making = _MAKER.submit(self._make, self.keep - len(self._ready))

    def _make(self, n):
        for _ in range(n):
            try:
                fd, path = self._create(self.dir)
            except OSError:  # a full or read-only disk: uploads meet it themselves
                return
            self._ready.append((fd, path.name))

    def _create(self, folder):
        path = folder / f"{self._prefix}{next(self._serial)}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        return fd, path
