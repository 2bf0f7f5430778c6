"""How file bytes lie on a node's disk, free of any HTTP.

Layout: ``ROOT/files/<owner>/<rel path>`` holds committed files (the user's namespace is a
folder named after them); ``ROOT/tmp`` holds uploads in flight; ``ROOT/quarantine`` keeps
copies found bad, out of every user's reach, for the administrator to look at. A file
appears at its name only by an atomic rename after fsync, so a reader sees the old bytes or
the new ones, never half of either, and a crash or a broken-off body leaves at most a temp
file that the next start sweeps away.
"""
import errno
import os
import shutil
import tempfile
import time
from pathlib import Path

from securifile.common.digests import new_hasher
from securifile.common.errors import ApiError, Conflict, InsufficientStorage, NotFound

READ_CHUNK = 1 << 20
WRITE_BUFFER = 1 << 20


class DigestMismatch(ApiError):
    status, code = 400, "digest_mismatch"


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskStore:
    """The files of one node under one root directory."""

    def __init__(self, root, capacity_bytes=0):
        self.root = Path(root).resolve()
        self.files_dir = self.root / "files"
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self.capacity_bytes = capacity_bytes
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._used = None

    def sweep_temp(self):
        """Remove uploads that a crash left half-written."""
        for p in self.tmp_dir.iterdir():
            p.unlink(missing_ok=True)

    def path_for(self, fp):
        """The on-disk path of a validated FilePath; never outside ``files_dir``."""
        namespace = self.files_dir / fp.owner
        path = namespace.joinpath(*fp.segments) if fp.rel else namespace
        # parse_path already refuses '..' and friends; this is the belt to those braces: the
        # owner is one folder right under files_dir, and the name stays inside that folder.
        ns = os.path.normpath(namespace)
        if (os.path.dirname(ns) != str(self.files_dir) or os.path.basename(ns) != fp.owner
                or os.path.commonpath([ns, os.path.normpath(path)]) != ns):
            raise ApiError("path escapes the data directory", code="invalid_path")
        return path

    def exists(self, fp):
        return self.path_for(fp).is_file()

    def size(self, fp):
        try:
            return self.path_for(fp).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{fp} is not stored on this server") from None

    def writer(self, fp, algorithm):
        return DiskWriter(self, fp, algorithm)

    def open_chunks(self, fp, start=0, end=None, chunk_size=READ_CHUNK):
        """Yield the bytes ``[start, end)`` of a stored file in chunks."""
        try:
            f = open(self.path_for(fp), "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{fp} is not stored on this server") from None
        return _chunks(f, start, end, chunk_size)

    def delete(self, fp):
        """Remove a file and the folders it leaves empty up to the namespace root."""
        path = self.path_for(fp)
        try:
            size = path.stat().st_size
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):  # gone, or a parent is a file
            return False
        self._adjust_used(-size)
        self._remove_empty_parents(fp, path)
        return True

    def quarantine(self, fp):
        """Move a bad copy to ``ROOT/quarantine/<owner>/<rel>.<ns time>``; its new path, or
        None if there was no file to move."""
        path = self.path_for(fp)
        target = self.quarantine_dir / fp.owner / f"{fp.rel}.{time.time_ns()}"
        try:
            size = path.stat().st_size
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except (FileNotFoundError, NotADirectoryError):
            return None
        self._adjust_used(-size)
        _fsync_dir(path.parent)
        self._remove_empty_parents(fp, path)
        return target

    def _remove_empty_parents(self, fp, path):
        parent = path.parent
        owner_root = self.files_dir / fp.owner
        while parent != owner_root and parent != self.files_dir:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def _adjust_used(self, delta):
        if self._used is not None:
            self._used += delta

    def used_bytes(self):
        """Bytes held; counted from disk once, then kept up to date by commits and deletes."""
        if self._used is None:
            self._used = self._count_used()
        return self._used

    def _count_used(self):
        total = 0
        for dirpath, _dirs, files in os.walk(self.files_dir):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def usage(self):
        """(used, available) bytes; with a capacity set, available is what is left of it."""
        used = self.used_bytes()
        free = shutil.disk_usage(self.root).free
        if self.capacity_bytes:
            return used, max(0, min(free, self.capacity_bytes - used))
        return used, free

    def check_room(self, incoming):
        _used, available = self.usage()
        if incoming > available:
            raise InsufficientStorage(
                f"not enough space: {incoming} bytes needed, {available} available")


def _chunks(f, start, end, chunk_size):
    with f:
        f.seek(start)
        remaining = None if end is None else end - start
        while remaining is None or remaining > 0:
            n = chunk_size if remaining is None else min(chunk_size, remaining)
            chunk = f.read(n)
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


class DiskWriter:
    """One upload in flight: bytes go to a temp file and into the digest as they arrive."""

    def __init__(self, store, fp, algorithm):
        self.store = store
        self.fp = fp
        self.algorithm = algorithm
        self.hasher = new_hasher(algorithm)
        self.size = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="up-")
        # Buffered: a TLS record brings at most 16 KiB, and one write() each costs more than
        # the copy into a 1 MiB buffer.
        self._file = os.fdopen(fd, "wb", buffering=WRITE_BUFFER)
        self._tmp = Path(name)
        self.done = False

    def write(self, chunk):
        self.hasher.update(chunk)
        try:
            self._file.write(chunk)
        except OSError as e:
            self.abort()
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage("the server ran out of disk space") from None
            raise
        self.size += len(chunk)

    def commit(self, expected_digest=None, expected_size=None):
        """fsync, check, and atomically rename into place; returns the hex digest."""
        digest = self.hasher.hexdigest()
        try:
            if expected_size is not None and self.size != expected_size:
                raise ApiError(
                    f"body ended after {self.size} of {expected_size} bytes", code="incomplete_body")
            if expected_digest is not None and expected_digest != digest:
                raise DigestMismatch(
                    f"{self.algorithm} digest of the received bytes is {digest}, "
                    f"not {expected_digest} as the client said")
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise InsufficientStorage("the server ran out of disk space") from None
                raise
            self._file.close()
            target = self.store.path_for(self.fp)
            self._make_parents(target)
            if target.is_dir():
                raise Conflict(f"{self.fp} is a folder", code="is_a_folder")
            try:
                replaced = target.stat().st_size
            except FileNotFoundError:
                replaced = 0
            os.replace(self._tmp, target)
            self.store._adjust_used(self.size - replaced)
            _fsync_dir(target.parent)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return digest

    def _make_parents(self, target):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise Conflict(
                f"a parent of {self.fp} is a file, not a folder", code="parent_is_a_file") from None

    def abort(self):
        if self.done:
            return
        self.done = True
        try:
            self._file.close()
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)
