"""Resumable uploads on a node's disk, free of any HTTP: what was received so far, kept
across broken connections and restarts until the upload completes or expires.

Layout: ``ROOT/partial/<id>.json`` says whose upload it is, of which file, started on top of
which version, with what declared length and whole-file digests; ``ROOT/partial/<id>.data``
holds the bytes received so far, and its size is the upload's offset (whatever a crash left
in it is what the client is told to resume from; the whole-file digest catches the rest).
``ROOT/partial`` is beside ``ROOT/files``, on the same file system, so that a complete upload
goes into place by the same fsync and atomic rename as any other upload (``DiskWriter``).
A complete upload keeps its ``.json`` (no data) until it expires, so that a client whose
last answer was lost learns from ``HEAD`` that it is done.
"""
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from securifile.common.digests import new_hasher
from securifile.common.durable import fsync_dir
from securifile.common.errors import ApiError, NotFound
from securifile.common.paths import FilePath

from .buffers import Gather
from .diskfile import WRITE_BUFFER, DiskWriter


class TooManyPartialUploads(ApiError):
    status, code = 429, "too_many_partial_uploads"


@dataclass
class PartialUpload:
    """One resumable upload's metadata (its offset is the size of its data file)."""

    id: str
    user: str  # who started it: nobody else may see, append to or cancel it
    owner: str
    path: str
    base_version: int  # the file's version (0: none) when it started; a change refuses it
    length: int = None  # the declared total length (Upload-Length), once known
    digests: dict = field(default_factory=dict)  # declared whole-file digests {algorithm: hex}
    created: float = 0.0
    touched: float = 0.0  # the last byte or request: the expiry counts from here
    complete: bool = False
    size: int = 0  # the final size, once complete
    reservation: str = ""  # its quota reservation's id, renewed by each request

    @property
    def file_path(self):
        return FilePath(self.owner, self.path)


class PartialUploadStore:
    """The partial uploads of one node: created, found (for their user only), swept."""

    def __init__(self, root, ttl_seconds, per_user, clock=time.time, trash=None):
        self.dir = Path(root) / "partial"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.trash = trash  # the store's (``nodes/trash.py``): big data freed behind the loop
        self.ttl = ttl_seconds
        self.per_user = per_user
        self.clock = clock
        self.active = {}  # id -> the append running now (see resumable.Append)
        self._hashers = {}  # id -> (offset, hasher of the bytes before it), kept in memory

    def data_path(self, upload_id):
        return self.dir / f"{upload_id}.data"

    def _meta_path(self, upload_id):
        return self.dir / f"{upload_id}.json"

    def create(self, user, fp, base_version, length=None, digests=None, reservation=""):
        """A new empty partial upload; TooManyPartialUploads beyond ``per_user`` open ones."""
        if self.per_user and sum(1 for u in self.all() if u.user == user
                                 and not u.complete) >= self.per_user:
            raise TooManyPartialUploads(
                f"{user} already has {self.per_user} unfinished resumable uploads on this "
                "server: complete or cancel one (DELETE its upload URL) first")
        now = self.clock()
        upload = PartialUpload(secrets.token_urlsafe(24), user, fp.owner, fp.rel, base_version,
                               length, dict(digests or {}), now, now,
                               reservation=reservation)
        fd = os.open(self.data_path(upload.id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        self.save(upload)
        return upload

    def save(self, upload):
        """Write the metadata durably (temp file, fsync, rename, fsync the folder)."""
        path = self._meta_path(upload.id)
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(upload), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self.dir)

    def touch(self, upload):
        upload.touched = self.clock()
        self.save(upload)

    def get(self, upload_id, user):
        """The upload, if ``user`` started it and it has not expired; NotFound (404) for
        anybody else, so that nobody learns which uploads exist."""
        upload = self._load(upload_id) if _plausible_id(upload_id) else None
        if upload is None or upload.user != user or self._expired(upload):
            raise NotFound("no such upload (it may have expired or been cancelled)",
                           code="no_upload")
        return upload

    def _load(self, upload_id):
        try:
            return PartialUpload(**json.loads(self._meta_path(upload_id).read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def all(self):
        return [u for u in (self._load(p.stem) for p in self.dir.glob("*.json")) if u is not None]

    def offset(self, upload):
        if upload.complete:
            return upload.size
        try:
            return self.data_path(upload.id).stat().st_size
        except FileNotFoundError:
            return 0

    def expires_in(self, upload):
        return max(0.0, upload.touched + self.ttl - self.clock())

    def _expired(self, upload):
        return upload.id not in self.active and self.clock() > upload.touched + self.ttl

    def remove(self, upload):
        self._hashers.pop(upload.id, None)
        data = self.data_path(upload.id)
        try:
            if self.trash is None:
                data.unlink()
            else:
                self.trash.remove(data, data.stat().st_size)
        except FileNotFoundError:
            pass
        self._meta_path(upload.id).unlink(missing_ok=True)

    def mark_complete(self, upload, size):
        """The data went into place: keep only the metadata, which HEAD answers from."""
        upload.complete, upload.size = True, size
        self._hashers.pop(upload.id, None)
        self.touch(upload)
        self.data_path(upload.id).unlink(missing_ok=True)

    def sweep(self):
        """Remove the uploads untouched for longer than the expiry (not one being appended
        to), and stray files a crash left; how many uploads went."""
        gone = 0
        for upload in self.all():
            if self._expired(upload):
                self.remove(upload)
                gone += 1
        known = {p.stem for p in self.dir.glob("*.json")}
        for p in self.dir.iterdir():
            if p.suffix == ".tmp" or (p.suffix == ".data" and p.stem not in known):
                p.unlink(missing_ok=True)
        return gone

    def writer(self, upload, algorithm):
        """A writer appending to ``upload``'s data; its hasher holds the bytes before the
        offset: kept in memory from the last append, else (after a restart) read again."""
        offset = self.offset(upload)
        kept = self._hashers.pop(upload.id, None)
        hasher = kept[1] if kept is not None and kept[0] == offset else None
        return PartialWriter(self, upload, algorithm, offset, hasher)

    def keep_hasher(self, upload, offset, hasher):
        self._hashers[upload.id] = (offset, hasher)


def _plausible_id(upload_id):
    return 16 <= len(upload_id) <= 64 and all(c.isalnum() or c in "-_" for c in upload_id)


def hash_file(path, algorithms, upto=None, chunk=WRITE_BUFFER):
    """{algorithm: hasher} over the first ``upto`` bytes (all of them by default)."""
    hashers = {a: new_hasher(a) for a in algorithms}
    with open(path, "rb") as f:
        left = upto
        while left is None or left > 0:
            data = f.read(chunk if left is None else min(chunk, left))
            if not data:
                break
            for h in hashers.values():
                h.update(data)
            if left is not None:
                left -= len(data)
    return hashers


class PartialWriter(DiskWriter):
    """A ``DiskWriter`` that appends to a partial upload's data file instead of a fresh temp
    file: ``pause`` makes what arrived durable and keeps it, ``commit`` puts the whole file
    in place, ``abort`` (a failed commit) throws the upload's data away."""

    def __init__(self, partials, upload, algorithm, offset, hasher=None):
        self.store = None  # set by bind(): the DiskStore the file is committed into
        self.partials = partials
        self.upload = upload
        self.fp = upload.file_path
        self.algorithm = algorithm
        path = partials.data_path(upload.id)
        if hasher is None:  # after a restart: the bytes so far are hashed again
            hasher = hash_file(path, [algorithm], offset)[algorithm]
        self.hasher = hasher
        # No read checksums: the bytes come in over several requests and restarts; the
        # first whole read takes them (``download.py``).
        self.sums = None
        self.size = self.start = offset
        self._fd = os.open(path, os.O_WRONLY)
        os.ftruncate(self._fd, offset)  # nothing past the offset the client was told
        os.lseek(self._fd, offset, os.SEEK_SET)
        self._tmp = path
        self._direct = None  # parts are written through the page cache (DiskWriter._put)
        self._gather = Gather(WRITE_BUFFER, self._put, buffers=2)
        self._behind = None
        self._synced = offset
        self._written = offset  # bytes in the file: DiskWriter._put counts them as in flight
        self._syncing = None
        self.done = False
        self.discarded = False  # the upload was thrown away (a failed commit, a full disk)

    def bind(self, store):
        self.store = store
        return self

    def pause(self):
        """Flush and fsync what arrived, keep it, remember the hash so far; the new offset."""
        if self.done:
            return self.size
        self.done = True
        try:
            self._drain()
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
        self.partials.keep_hasher(self.upload, self.size, self.hasher)
        return self.size

    def rewind(self, hasher):
        """Drop what this request appended (its own digest did not match): back to the
        offset it started from, with ``hasher`` (a copy taken then)."""
        self._gather.clear()
        self._forget_behind()  # its bytes go with the rest of this request's
        os.ftruncate(self._fd, self.start)
        os.lseek(self._fd, self.start, os.SEEK_SET)
        self.size, self.hasher, self._written = self.start, hasher, self.start

    def whole_file_digests(self, algorithms):
        """{algorithm: hex} of everything received, for algorithms other than the writer's
        own (which it hashes as the bytes arrive); read back from disk."""
        self._drain()
        return {a: h.hexdigest() for a, h in
                hash_file(self._tmp, algorithms, self.size).items()}

    def abort(self):
        if not self.done:
            super().abort()
            self.discarded = True
            self.partials.remove(self.upload)
