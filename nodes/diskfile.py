"""How file bytes lie on a node's disk, free of any HTTP.

Layout: ``ROOT/files/<owner>/<rel path>`` holds committed files (the user's namespace is a
folder named after them); ``ROOT/tmp`` holds uploads in flight (their temp files made
ahead, empty, in ``ROOT/spare``: ``nodes/sparefiles.py``); ``ROOT/quarantine`` keeps
copies found bad, out of every user's reach, for the administrator to look at;
``ROOT/trash`` holds big files given up until a worker thread has freed them
(``nodes/trash.py``). A file
appears at its name only by an atomic rename after fsync, so a reader sees the old bytes or
the new ones, never half of either, and a crash or a broken-off body leaves at most a temp
file that the next start sweeps away.
"""
import asyncio
import concurrent.futures
import errno
import os
import shutil
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from securifile.common.digests import new_hasher
from securifile.common.durable import FolderSyncer, fsync_dir
from securifile.common.errors import ApiError, Conflict, InsufficientStorage, NotFound

from .buffers import Gather, read_views
from .chunksums import ChunkSums
from .sparefiles import SpareFiles
from .trash import Trash

READ_CHUNK = 1 << 20
WRITE_BUFFER = 1 << 20
SYNC_EVERY = 256 << 20  # a big upload is synced behind the writes this often (as Swift does)
# One thread syncs big uploads behind their writes (fdatasync releases the GIL).
_SYNCER = ThreadPoolExecutor(1, thread_name_prefix="datasync")
# Full buffers of big bodies are hashed and written by these threads while the event loop
# reads the next MiB from TLS (hashlib and ``write(2)`` release the GIL; the hash and the copy
# into new page-cache pages are most of a big upload's CPU). Each upload has at most one
# buffer in flight, so its bytes are hashed and written in order; two threads let two big
# uploads go at once.
_WRITERS = ThreadPoolExecutor(2, thread_name_prefix="diskwrite")


class DigestMismatch(ApiError):
    status, code = 400, "digest_mismatch"


_NOT_A_NAME = frozenset(("", ".", ".."))  # path parts path_for refuses


class DiskStore:
    """The files of one node under one root directory."""

    def __init__(self, root, capacity_bytes=0, reserve_bytes=0):
        self.root = Path(root).resolve()
        self.files_dir = self.root / "files"
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self.capacity_bytes = capacity_bytes
        # Free space of the file system that no upload may take (the node's own databases,
        # logs and the operator need it when users have filled the rest).
        self.reserve_bytes = reserve_bytes
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.trash = Trash(self.root / "trash")  # big files freed behind the event loop
        self._used = None
        self.folders = FolderSyncer()  # folder fsyncs of concurrent commits, shared
        self.spares = None  # empty files made ahead for temp files (``keep_spares``)
        # Files whose bytes at the name and whose copy record may disagree for a moment: a
        # commit has renamed its new version into place and not been recorded yet, or a copy
        # is removed and its record not yet forgotten.
        self._changing = {}

    @contextmanager
    def changing(self, fp):
        """Marks ``fp`` while its bytes and its copy's record may disagree (nests)."""
        self._changing[fp] = self._changing.get(fp, 0) + 1
        try:
            yield
        finally:
            self._changing[fp] -= 1
            if not self._changing[fp]:
                del self._changing[fp]

    def being_changed(self, fp):
        """Whether ``fp`` is inside ``changing``: what lies at the name may not be what the
        copy's record says, so a reader in another thread must not judge it (quarantine,
        challenge answers). Read only: safe from a thread."""
        return self._changing.get(fp, 0) > 0

    def sweep_temp(self):
        """Remove uploads that a crash left half-written (and spare files and trash it left)."""
        for p in self.tmp_dir.iterdir():
            p.unlink(missing_ok=True)
        if self.spares is not None:
            self.spares.sweep()
        self.trash.sweep()

    def keep_spares(self):
        """Make temp files ahead, in a worker thread (``nodes/sparefiles.py``): a running
        node's uploads take theirs without creating a file on the event loop."""
        self.spares = SpareFiles(self.root / "spare")

    def new_temp(self):
        """(fd, path): an empty temp file of one upload's own in ``tmp``."""
        if self.spares is not None:
            return self.spares.take(self.tmp_dir)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="up-")
        return fd, Path(name)

    def path_for(self, fp):
        """The on-disk path of a validated FilePath; never outside ``files_dir``."""
        # parse_path already refuses '..' and friends; this is the belt to those braces, kept
        # to string tests because an upload asks three times: no part of the name may be
        # empty, '.' or '..' or hold a '/' of its own (the owner) or a NUL, so the path is a
        # plain descent from the owner's folder right under files_dir.
        owner, rel = fp.owner, fp.rel
        if (owner in _NOT_A_NAME or "/" in owner or "\0" in owner or "\0" in rel
                or (rel and not _NOT_A_NAME.isdisjoint(rel.split("/")))):
            raise ApiError("path escapes the data directory", code="invalid_path")
        return self.files_dir / owner / rel if rel else self.files_dir / owner

    def exists(self, fp):
        return self.path_for(fp).is_file()

    def size(self, fp):
        try:
            return self.path_for(fp).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{fp} is not stored on this server") from None

    def writer(self, fp, algorithm, direct=False):
        return DiskWriter(self, fp, algorithm, direct)

    def open_chunks(self, fp, start=0, end=None, chunk_size=READ_CHUNK):
        """Yield the bytes ``[start, end)`` of a stored file in chunks."""
        return _chunks(self._open(fp), start, end, chunk_size)

    def open_file(self, fp):
        """The stored file opened unbuffered for reading (NotFound if there is none)."""
        return self._open(fp, buffering=0)

    def open_views(self, fp, start=0, end=None, chunk_size=READ_CHUNK, behind_read=None):
        """``open_chunks`` for a download: views of two buffers, each chunk overwritten once
        the caller asks for the next (``buffers.read_views``, reading ahead in a worker
        thread once the disk has to be waited for, that read kept in ``behind_read``)."""
        return read_views(self._open(fp, buffering=0), start, end, chunk_size, ahead=True,
                          behind_read=behind_read)

    def _open(self, fp, **kw):
        try:
            return open(self.path_for(fp), "rb", **kw)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{fp} is not stored on this server") from None

    def delete(self, fp):
        """Remove a file and the folders it leaves empty up to the namespace root."""
        path = self.path_for(fp)
        try:
            size = path.stat().st_size
            self.trash.remove(path, size)
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
        fsync_dir(path.parent)
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
        return sum(st.st_size for _owner, _rel, st in self.stored_files())

    def stored_files(self):
        """(owner, rel, lstat) of every regular file in the owners' folders, from a walk of
        the disk (for a thread: no record is read)."""
        for dirpath, _dirs, files in os.walk(self.files_dir):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                parts = os.path.relpath(path, self.files_dir).split(os.sep)
                if stat.S_ISREG(st.st_mode) and len(parts) > 1:  # none is right in files_dir
                    yield parts[0], "/".join(parts[1:]), st

    def usage(self):
        """(used, available) bytes; with a capacity set, available is what is left of it."""
        used = self.used_bytes()
        free = shutil.disk_usage(self.root).free
        if self.capacity_bytes:
            return used, max(0, min(free, self.capacity_bytes - used))
        return used, free

    def room(self, in_flight=0):
        """Bytes an upload may still write: the file system's free space less the reserve,
        and no more than what is left of the capacity, if set, once ``in_flight`` bytes (of
        this upload, already in its temp file: already out of the free space) count."""
        room = shutil.disk_usage(self.root).free - self.reserve_bytes
        if self.capacity_bytes:
            room = min(room, self.capacity_bytes - self.used_bytes() - in_flight)
        return max(0, room)

    def check_room(self, incoming, in_flight=0):
        room = self.room(in_flight)
        if incoming > room:
            raise InsufficientStorage(
                f"not enough space: {incoming} bytes needed, {room} available"
                + (f" (this server keeps {self.reserve_bytes} bytes free)"
                   if self.reserve_bytes else ""))


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
    """One upload in flight: bytes go to a temp file and into the digest as they arrive.

    Under TLS the pieces arrive 16 KiB at a time; they are gathered in 1 MiB buffers, two
    reused in turn for the whole body (``buffers.Gather``), and hashed and written a buffer
    at a time (one ``update`` and one ``write(2)`` per MiB rather than 64 of each: every
    ``update`` over 2 KiB gives up and takes back the GIL). A full buffer is hashed and
    written behind, by a worker thread, while the event loop reads the next one from TLS;
    anything shorter (a small body, the end of a big one) is done inline, where a hand-off
    to a thread would cost more than it saves. The hash and the read checksums are final
    once ``_drain`` returns. A big file is synced to disk in a
    worker thread every ``SYNC_EVERY`` bytes while it arrives, so that the fsync of the
    commit finds little left to write.
    """

    def __init__(self, store, fp, algorithm, direct=False):
        self.store = store
        self.fp = fp
        self.algorithm = algorithm
        self.hasher = new_hasher(algorithm)
        self.sums = ChunkSums()  # what a whole read of the copy checks (``chunksums``)
        self.size = 0
        self._fd, self._tmp = store.new_temp()
        # ``direct``: full buffers bypass the page cache (``_open_direct``).
        self._direct = _open_direct(self._tmp) if direct else None
        self._gather = Gather(WRITE_BUFFER, self._put, buffers=2,
                              aligned=self._direct is not None)
        self._behind = None  # a full buffer being hashed and written in a thread
        self._synced = 0
        self._written = 0  # bytes in the temp file, or on their way there
        self._syncing = None
        self._presync = None  # the fsync of the whole body started before the commit
        self.done = False

    def write(self, chunk):
        self.size += len(chunk)
        self._gather.add(chunk)
        if self.size - self._synced >= SYNC_EVERY:
            self._sync_behind()

    def space(self):
        """Where the next bytes of the body may be read to in place (see ``filled``)."""
        return self._gather.space()

    def filled(self, n):
        """``n`` bytes were read into the view ``space`` gave: ``write`` without a copy."""
        self.size += n
        self._gather.took(n)
        if self.size - self._synced >= SYNC_EVERY:
            self._sync_behind()

    def _drain(self):
        """Every byte received so far is in the file (not necessarily on the disk)."""
        self._gather.drain()
        self._settle()

    def _put(self, data):
        # The buffer before this one has landed first (Gather fills it next, and the free
        # space below must count its bytes as taken).
        self._settle()
        # Checked before every buffer (a statvfs a MiB): a body of unknown length was never
        # checked up front, and concurrent uploads can together outgrow what each saw.
        try:
            self.store.check_room(len(data), self._written)
        except InsufficientStorage:
            self.abort()
            raise
        offset, self._written = self._written, self._written + len(data)
        if self._direct is not None and len(data) == WRITE_BUFFER and not offset % WRITE_BUFFER:
            self._behind = _WRITERS.submit(_hash_and_write_direct, self.hasher, self.sums,
                                           self._direct, self._fd, data, offset)
            return
        if len(data) >= WRITE_BUFFER:
            self._behind = _WRITERS.submit(_hash_and_write, self.hasher, self.sums,
                                           self._fd, data)
            return
        try:
            _hash_and_write(self.hasher, self.sums, self._fd, data)
        except OSError as e:
            self._failed(e)

    def _settle(self):
        """Wait for the buffer being hashed and written behind, if any; its error is this
        call's."""
        behind, self._behind = self._behind, None
        if behind is not None:
            try:
                behind.result()
            except OSError as e:
                self._failed(e)

    def _failed(self, error):
        self.abort()
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the server ran out of disk space") from None
        raise error

    def _forget_behind(self):
        """Wait for the buffer being written behind, whatever its outcome (before the
        descriptor is closed or truncated under it)."""
        behind, self._behind = self._behind, None
        if behind is not None:
            concurrent.futures.wait([behind])

    def _sync_behind(self):
        """fdatasync what was written so far, in a worker thread, on a duplicate descriptor
        (so that an abort meanwhile cannot close it under the thread)."""
        if self._syncing is not None and not self._syncing.done():
            return
        self._synced = self.size
        self._syncing = _SYNCER.submit(_datasync_and_close, os.dup(self._fd))

    def commit(self, expected_digest=None, expected_size=None):
        """fsync, check, and atomically rename into place; returns the hex digest."""
        try:
            digest = self._checked(expected_digest, expected_size)
            _fsync_file(self._fd)
            target = self._place()
            fsync_dir(target.parent)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return digest

    def presync(self):
        """The whole body is here: start its fsync on a worker thread now, while the caller
        still waits for something else (an upload's lock round). Nothing is renamed; the
        commit then skips its own fsync, or fails with this one's error (a failed fsync
        cannot be retried: the kernel may have dropped the dirty pages)."""
        if self._presync is None and not self.done:
            self._presync = asyncio.ensure_future(self._drain_and_fsync())
            self._presync.add_done_callback(_retrieve)

    async def _drain_and_fsync(self):
        self._drain()
        return await self._fsync_now(self.size)

    async def _fsync_now(self, size):
        fd = os.dup(self._fd)  # an abort meanwhile must not close it under the thread
        try:
            await asyncio.to_thread(_fsync_file, fd)
        finally:
            os.close(fd)
        return size

    async def commit_async(self, expected_digest=None, expected_size=None):
        """``commit`` with both fsyncs on worker threads, so the event loop serves other
        requests while the disk answers; the folder's fsync is shared with the renames
        into it made meanwhile (``DiskStore.folders``). Returns once the file is durable."""
        try:
            synced = await self._presync if self._presync is not None else None
            digest = self._checked(expected_digest, expected_size)
            if synced != self.size and not self.done:
                await self._fsync_now(self.size)
            if self.done:  # aborted meanwhile (the sender went away): nothing was renamed
                raise ApiError("the upload was abandoned while it was being stored",
                               code="aborted")
            with self.store.changing(self.fp):  # (a caller that records holds it on)
                target = self._place()
                await self.store.folders.sync(target.parent)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return digest

    def _checked(self, expected_digest, expected_size):
        """The digest of all that was written, once it matches what the sender declared."""
        self._drain()
        digest = self.hasher.hexdigest()
        if expected_size is not None and self.size != expected_size:
            raise ApiError(
                f"body ended after {self.size} of {expected_size} bytes", code="incomplete_body")
        if expected_digest is not None and expected_digest != digest:
            raise DigestMismatch(
                f"{self.algorithm} digest of the received bytes is {digest}, "
                f"not {expected_digest} as the client said")
        return digest

    def _close_direct(self):
        direct, self._direct = self._direct, None
        _close_quietly(direct)

    def _place(self):
        """Rename the synced temp file to the file's name; the name's path."""
        self._close_direct()
        os.close(self._fd)
        self._fd = None
        target = self.store.path_for(self.fp)
        self._make_parents(target)
        if target.is_dir():
            raise Conflict(f"{self.fp} is a folder", code="is_a_folder")
        try:
            replaced = target.stat().st_size
        except FileNotFoundError:
            replaced = 0
        free_old = self.store.trash.replacing(target, replaced)  # not freed by the rename
        try:
            os.replace(self._tmp, target)
        finally:
            free_old()
        self.store._adjust_used(self.size - replaced)
        return target

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
        self._forget_behind()
        self._close_direct()
        fd, self._fd = self._fd, None
        _close_quietly(fd)
        self._gather.clear()
        try:
            self.store.trash.remove(self._tmp, self.size)
        except FileNotFoundError:
            pass


def _hash_and_write(hasher, sums, fd, data):
    hasher.update(data)
    if sums is not None:
        sums.update(data)
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])


def _close_quietly(fd):
    if fd is not None:
        try:
            os.close(fd)
        except OSError:  # what was written is judged by the fsync or the abort already
            pass


def _open_direct(path):
    """A second descriptor of the temp file at ``path`` that writes around the page cache
    (``O_DIRECT``), or None where the file system refuses it (tmpfs before Linux 6.6).

    Why, for a replica's big copy: the origin serves reads, so the copy is seldom read
    soon, and copying each MiB into new page-cache pages was the biggest cost of an r=2
    upload on this virtual machine, whose freed memory goes back to the host (each new
    page faults into it): ``perf`` put 37% of all the nodes' samples in
    ``copy_folio_from_iter_atomic``, in the three writer threads. Written direct, a
    replica's system CPU per GiB fell from 1.0-2.1 s to 0.3-0.5 s and the r=2 upload
    went from 134-166 to 167-189 MB/s (docs/PERFORMANCE.md). MinIO writes big objects
    with ``O_DIRECT`` too. The write waits for the device, so it runs behind the event
    loop (``_WRITERS``); the origin keeps the page cache, as the next download reads
    its copy."""
    try:
        return os.open(path, os.O_WRONLY | os.O_DIRECT)
    except OSError:
        return None


def _hash_and_write_direct(hasher, sums, direct, fd, data, offset):
    """``_hash_and_write`` of a full, page-aligned buffer at ``offset`` through the
    ``O_DIRECT`` descriptor ``direct``. ``fd``, which writes the body's end, is moved past
    it; what the device did not take (a short write on a nearly full disk, which leaves an
    unaligned rest) goes through ``fd``."""
    hasher.update(data)
    if sums is not None:
        sums.update(data)
    with memoryview(data) as view:
        done = 0
        try:
            while done < len(view):
                n = os.pwrite(direct, view[done:], offset + done)
                if not n:
                    break
                done += n
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: an unaligned rest, written below
                raise
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
    os.lseek(fd, offset + len(data), os.SEEK_SET)


def _fsync_file(fd):
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the server ran out of disk space") from None
        raise


def _retrieve(task):
    if not task.cancelled():
        task.exception()  # the commit that awaits it raises it; an abandoned one does not


def _datasync_and_close(fd):
    try:
        os.fdatasync(fd)
    except OSError:  # the commit's own fsync reports what matters
        pass
    finally:
        os.close(fd)
