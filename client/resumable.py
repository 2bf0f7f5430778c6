"""Resumable transfers on the client side: uploads that survive a broken connection or a
rerun of the same command, downloads that continue a partial local file.

Uploads follow draft-ietf-httpbis-resumable-upload as the nodes serve it: ``POST
/uploads/OWNER/PATH`` creates the upload (on whichever server coordinates the file, after
redirects) and answers its URL, which is saved at once in a small state file (one per local
file and remote name); one ``PATCH`` then sends the rest of the file with ``Upload-Complete:
?1``. When the connection breaks, ``HEAD`` on the upload's URL says how much arrived and the
next ``PATCH`` sends only what is missing; a rerun of the same command finds the URL in the
state file and does the same. The whole file's SHA-256 goes with the creation
(``Repr-Digest``), so the node checks the complete file, whatever the number of pieces.
"""
import hashlib
import json
import os
import time
from pathlib import Path
from urllib.parse import quote

from securifile.common.digests import ALGORITHMS, repr_digest

from .errors import (ClientError, DigestMismatch, FileNotFound, LocalFileError, ServerError,
                     TransferCancelled, TransportError, Unreachable)
from .storage import UPLOAD_ALGORITHM
from .transport import FileBody

# How often a broken upload is picked up again before the error is the answer, and how
# long the pauses between tries grow (a node restarting takes some seconds to serve again).
MAX_RESUMES = 30
PAUSE_FIRST, PAUSE_CAP = 0.25, 2.0
# Answers after which an upload is tried again after a pause: gone, changed, locked (by its
# own lost request's lock, until the peers see that server down), busy, not serving yet.
RETRIED = (404, 409, 412, 423, 429, 503)
CREATE_RETRIED = (423, 429, 503)
GONE, DONE = -1, -2  # what _offset says of an upload its server does not know, or completed
# A completed upload whose answer was lost: its record is waited for this long, plus the
# time its replicas' copies take at this rate.
STORED_WAIT, COPY_RATE = 30.0, 20e6
# Smaller files go by a plain PUT.
RESUMABLE_MIN = 4 << 20
# Unfinished uploads' state files older than this are forgotten (the nodes sweep theirs).
STATE_DAYS = 7


def resume_uploads(client, env=None, **options):
    """Make ``client.put`` resumable, its state kept in the user's state folder; the
    ResumableUploads, or None without a home to keep state in (plain PUTs then)."""
    folder = default_state_dir(env)
    if folder is None:
        return None
    client.resumable = ResumableUploads(client, UploadState(folder), **options)
    return client.resumable


def default_state_dir(env=None):
    """``$XDG_STATE_HOME/securifile/uploads`` or ``~/.local/state/securifile/uploads``."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "securifile" / "uploads"
    home = env.get("HOME")
    return Path(home) / ".local" / "state" / "securifile" / "uploads" if home else None


class UploadState:
    """Where the unfinished upload of one local file to one remote name went: a JSON file
    named after both (and the file's size and modification time, so that a changed file
    starts over)."""

    def __init__(self, folder, clock=time.time):
        self.folder = Path(folder)
        self.clock = clock

    def _path(self, local, remote, st):
        key = f"{Path(local).resolve()}\0{remote}\0{st.st_size}\0{st.st_mtime_ns}"
        return self.folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    def load(self, local, remote, st, digest):
        """The saved upload URL, if it is for these very bytes."""
        try:
            saved = json.loads(self._path(local, remote, st).read_text())
        except (OSError, ValueError):
            return None
        return saved.get("url") if saved.get("digest") == digest else None

    def save(self, local, remote, st, digest, url):
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(local, remote, st)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "digest": digest, "remote": remote,
                                   "local": str(local), "saved": self.clock()}))
        os.replace(tmp, path)

    def forget(self, local, remote, st):
        self._path(local, remote, st).unlink(missing_ok=True)
        self._sweep()

    def _sweep(self):
        cutoff = self.clock() - STATE_DAYS * 86400
        for p in self.folder.glob("*.json"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass


class ResumableUploads:
    """``Client.put`` through resumable uploads for files of ``min_size`` bytes or more (a
    smaller one is sent by a plain PUT: two lock rounds and a state file cost more than
    sending it again); ``on_resume(offset, size)`` is told each time an upload picks up
    again (the CLI says so on stderr)."""

    def __init__(self, client, state, *, resume=True, on_resume=None, sleep=time.sleep,
                 min_size=RESUMABLE_MIN):
        self.client = client
        self.min_size = min_size
        self.state = state
        self.resume = resume  # False: forget any unfinished upload and start over
        self.on_resume = on_resume or (lambda offset, size: None)
        self.sleep = sleep

    def put(self, fp, local, st, hexdigest, progress=None, cancel=None):
        if st.st_size < self.min_size:
            return self.client._put(fp, FileBody(local, st.st_size, self.client.chunk_size,
                                                  progress, cancel), hexdigest)
        remote = fp.full
        url = self.state.load(local, remote, st, hexdigest)
        if url is not None and not self.resume:
            self._cancel(url)  # --no-resume: the unfinished one goes, freeing its place
            url = None
        offset = None
        if url is not None:
            offset = self._offset(url)
            if offset == DONE:  # its last answer was lost: the file is there
                self.state.forget(local, remote, st)
                return self._stored(fp, st.st_size, hexdigest)
            if offset in (None, GONE):
                url = None  # expired, cancelled, or its server is gone: start over
        if url is None:
            url = self._create_patiently(fp, st.st_size, hexdigest)
            self.state.save(local, remote, st, hexdigest, url)
            offset = 0
        elif offset:
            self.on_resume(offset, st.st_size)
        pause, error = PAUSE_FIRST, None
        for attempt in range(MAX_RESUMES + 1):
            if attempt:
                self.sleep(pause)
                pause = min(pause * 2, PAUSE_CAP)
                found = self._offset(url)
                if found is None:
                    continue  # its server does not answer, or does not serve yet
                if found == DONE:
                    self.state.forget(local, remote, st)
                    return self._stored(fp, st.st_size, hexdigest)
                if found == GONE:  # the file changed meanwhile, the upload expired, or its
                    self.state.forget(local, remote, st)  # server was lost: start over
                    url, found = self._create_patiently(fp, st.st_size, hexdigest), 0
                    self.state.save(local, remote, st, hexdigest, url)
                offset = found
                if offset:
                    self.on_resume(offset, st.st_size)
            try:
                record = self._append(url, local, offset, st.st_size, progress, cancel)
            except TransferCancelled:
                self._cancel(url)  # the user gave it up: nothing to resume
                self.state.forget(local, remote, st)
                raise
            except ServerError as e:
                if e.status not in RETRIED:
                    raise
                error = e
                continue
            except (TransportError, Unreachable, OSError) as e:
                error = e
                continue
            self.state.forget(local, remote, st)
            if record.get("algorithm") == UPLOAD_ALGORITHM and record.get("digest") != hexdigest:
                raise DigestMismatch(remote, UPLOAD_ALGORITHM, hexdigest, record.get("digest"))
            return record
        if isinstance(error, ServerError):
            raise error
        raise TransportError(f"the upload of {remote} broke off {MAX_RESUMES + 1} times; run "
                             f"the command again to resume it: {getattr(error, 'cause', error)}")

    def _create_patiently(self, fp, size, hexdigest):
        """``_create``, asked again after a pause while the cluster cannot take it yet: 423
        while a lost server's lock on the file lasts (until its peers see it down, seconds),
        429 or 503, or no answer (a server that died while creating it); bounded."""
        pause = PAUSE_FIRST
        for attempt in range(MAX_RESUMES + 1):
            try:
                return self._create(fp, size, hexdigest)
            except ServerError as e:
                if e.status not in CREATE_RETRIED or attempt == MAX_RESUMES:
                    raise
            except (TransportError, Unreachable, OSError):
                if attempt == MAX_RESUMES:
                    raise
            self.sleep(pause)
            pause = min(pause * 2, PAUSE_CAP)

    def _create(self, fp, size, hexdigest):
        headers = {"Upload-Complete": "?0", "Upload-Length": str(size),
                   "Repr-Digest": repr_digest(UPLOAD_ALGORITHM, hexdigest)}
        path = f"/uploads/{quote(fp.owner, safe='')}/{quote(fp.rel, safe='/')}"
        resp = self.client.request("POST", path, headers=headers, expected=(201,))
        url = resp.header("Location")
        resp.release()
        if not url:
            raise ClientError(f"the server made an upload of {fp.full} without saying where")
        return url

    def _offset(self, url):
        """The upload's offset on its server; GONE when the server does not know it (any
        more), None when it does not answer or serve now."""
        try:
            resp = self.client._exchange("HEAD", url, self.client._headers(None), None)
        except Unreachable:
            return None
        try:
            if resp.status in (404, 412):
                return GONE
            if resp.status != 204:
                return None
            if resp.header("Upload-Complete") == "?1":
                return DONE
            return int(resp.header("Upload-Offset", "0"))
        finally:
            resp.release()

    def _cancel(self, url):
        try:
            self.client._exchange("DELETE", url, self.client._headers(None), None).release()
        except Unreachable:
            pass  # its server sweeps it when it expires

    def _stored(self, fp, size, hexdigest):
        """The record of a file whose upload completed without its answer reaching us (the
        answer waits for the replicas' copies, which a big file may make outlast the
        client's timeout): asked for until it shows these bytes, for a bounded time."""
        deadline = time.monotonic() + STORED_WAIT + size / COPY_RATE
        while True:
            try:
                info = self.client.stat(fp.full)
                if info.get("algorithm") != UPLOAD_ALGORITHM or info.get("digest") == hexdigest:
                    return info
                found = DigestMismatch(fp.full, UPLOAD_ALGORITHM, hexdigest, info.get("digest"))
            except FileNotFound as e:
                found = e
            if time.monotonic() > deadline:
                raise found
            self.sleep(PAUSE_CAP)

    def _append(self, url, local, offset, size, progress, cancel):
        """One PATCH with everything from ``offset``; the record once the file is stored."""
        headers = self.client._headers({"Upload-Offset": str(offset), "Upload-Complete": "?1",
                                        "Content-Type": "application/partial-upload"})
        body = FileBody(local, size - offset, self.client.chunk_size, progress, cancel,
                         start=offset)
        resp = self.client._exchange("PATCH", url, headers, body)
        if resp.status not in (200, 201):
            raise self.client._error(resp)
        return resp.json()


def continue_download(client, remote, local, *, progress=None, cancel=None):
    """Download ``remote`` into ``local``, keeping the bytes a partial ``local`` holds and
    fetching only the rest (``Range``); the whole file's digest is checked at the end, and a
    partial file that turns out to be of other bytes is downloaded again from the start."""
    local = Path(local)
    try:
        out = open(local, "r+b" if local.exists() else "w+b")
    except OSError as e:
        raise LocalFileError(f"cannot write {local}: {e.strerror or e}") from e
    ok = False
    try:
        with out:
            have = out.seek(0, os.SEEK_END)
            resume = None
            if have:
                stat = client.stat(remote)
                algorithm = stat.get("algorithm")
                if algorithm and stat.get("size") is not None and have <= stat["size"]:
                    resume = dict(done=have, etag=stat.get("etag"), algorithm=algorithm,
                                  expected=stat.get("digest"),
                                  hasher=_hash_prefix(out, algorithm, have, client.chunk_size))
                if resume and have == stat["size"] and resume["hasher"].hexdigest() == stat["digest"]:
                    info = dict(stat, size=have, verified=True)  # complete already
                elif resume and have == stat["size"]:
                    resume = None  # as long as the file, but other bytes
                if not resume:  # longer than the file, or of other bytes: start over
                    out.seek(0)
                    out.truncate()
            if not (resume and have == stat["size"]):
                info = client.download(remote, out, progress=progress, cancel=cancel,
                                       resume=resume)
            out.flush()
            os.fsync(out.fileno())
        info["local"] = str(local)
        info["continued_from"] = resume["done"] if resume else 0
        ok = True
        return info
    except DigestMismatch:
        local.unlink(missing_ok=True)  # even read again from the start: not the file
        raise
    except OSError as e:
        raise LocalFileError(f"cannot write {local}: {e.strerror or e}") from e
    finally:
        if not ok and local.exists() and local.stat().st_size == 0:
            local.unlink()


def _hash_prefix(out, algorithm, length, chunk_size):
    h = hashlib.new(ALGORITHMS[algorithm][0])
    out.seek(0)
    left = length
    while left:
        data = out.read(min(chunk_size, left))
        if not data:
            break
        h.update(data)
        left -= len(data)
    out.seek(length)
    return h
