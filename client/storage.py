"""The SecuriFile client: files up and down the cluster, streamed, verified, resumed.

One synchronous client for the CLI, the tests and the TUI's thread workers. ``Client`` holds
the file operations; which server answers, failover and redirects are ``ClusterClient``'s
(failover.py), one request on the wire is the ``Transport``'s (transport.py). Bodies stream
in chunks both ways, so memory stays flat for any file size.
"""
import hashlib
import http.client
import io
from pathlib import Path

from securifile.common.digests import ALGORITHMS, parse_digest_field, repr_digest

from .errors import (
    DigestMismatch, FileLocked, HolderUnreachable, LocalFileError, ProtocolError, RateLimited,
)
from .failover import Backoff, ClusterClient
from .files import (
    AtomicFile, file_url_path, folder_url_path, parse_remote, plan_download, plan_upload,
)
from .plans import transfer_plan
from .transport import CHUNK_SIZE, BytesBody, FileBody, check_cancel, report_progress

UPLOAD_ALGORITHM = "sha256"


class Client(ClusterClient):
    """Files of one cluster, for one user: upload, download, list, stat, delete.

    ``chunk_size``: the size of each read and write of a transfer; every other keyword is
    ``ClusterClient``'s (servers, credentials, timeouts, failover).
    """

    def __init__(self, servers, *, chunk_size=CHUNK_SIZE, **options):
        super().__init__(servers, **options)
        self.chunk_size = chunk_size
        # A resumable.ResumableUploads: put() then survives broken connections.
        self.resumable = None

    # -- files --

    def put(self, local, remote, *, progress=None, cancel=None):
        """Upload a local file to ``owner/path``; returns the server's JSON record.

        The digest is computed in a first pass and sent as ``Content-Digest`` so the server
        can refuse bytes damaged on the way.
        """
        fp = parse_remote(remote)
        local = Path(local)
        try:
            st = local.stat()
            if not local.is_file():
                raise LocalFileError(f"{local} is not a regular file")
            hexdigest = _file_digest(local, UPLOAD_ALGORITHM, self.chunk_size, cancel)
        except OSError as e:
            raise LocalFileError(f"cannot read {local}: {e.strerror or e}") from e
        if self.resumable is not None:
            return self.resumable.put(fp, local, st, hexdigest, progress, cancel)
        body = FileBody(local, st.st_size, self.chunk_size, progress, cancel)
        return self._put(fp, body, hexdigest)

    def put_bytes(self, data, remote, *, progress=None, cancel=None):
        """Upload ``data`` (bytes) to ``owner/path``; returns the server's JSON record."""
        fp = parse_remote(remote)
        hexdigest = hashlib.new(ALGORITHMS[UPLOAD_ALGORITHM][0], data).hexdigest()
        return self._put(fp, BytesBody(data, self.chunk_size, progress, cancel), hexdigest)

    def _put(self, fp, body, hexdigest):
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Digest": repr_digest(UPLOAD_ALGORITHM, hexdigest)}
        backoff, lost = Backoff(self.unavailable_wait, self._clock, self._sleep), False
        while True:
            try:
                resp = self.request("PUT", file_url_path(fp), headers=headers, body=body,
                                    expected=(200, 201))
                break
            except FileLocked as e:
                # The server the upload went to died with it: its lock on the file lasts on
                # the other servers until they see it down (seconds). Ask again, for a while;
                # a 423 without such a loss is another writer's, the answer at once.
                lost = lost or e.after_lost_request
                if not lost or not backoff.pause():
                    raise
            except RateLimited as e:
                # This user's uploads already fill their places on that server (other
                # commands, or a folder's files several at a time): one frees up soon.
                if e.code != "too_many_uploads" or not backoff.pause():
                    raise
        record = resp.json()
        if record.get("algorithm") == UPLOAD_ALGORITHM and record.get("digest") not in (None, hexdigest):
            raise DigestMismatch(fp.full, UPLOAD_ALGORITHM, hexdigest, record["digest"])
        return record

    def download(self, remote, out, *, progress=None, cancel=None, restarted=False,
                 resume=None):
        """Stream ``owner/path`` into the writable binary file ``out``; returns what was read.

        The bytes are checked against ``Repr-Digest``. If the holder dies mid-transfer the
        rest is fetched with ``Range`` from the next holder (from the start if ``out`` is
        seekable and the server cannot resume). ``resume``: ``out`` holds the first
        ``done`` bytes already (dict of done, etag, algorithm, expected digest and the hasher
        over those bytes, see ``resumable.continue_download``).
        """
        fp = parse_remote(remote)
        path = file_url_path(fp)
        done, etag, hasher, expected, total = 0, None, None, None, None
        algorithm, info = None, {}
        if resume:
            done, etag, hasher = resume["done"], resume["etag"], resume["hasher"]
            algorithm, expected = resume["algorithm"], resume["expected"]
            info = {"owner": fp.owner, "path": fp.rel, "etag": etag}
        failures = 0
        while True:
            headers = {}
            if done:
                headers["Range"] = f"bytes={done}-"
                if etag:
                    headers["If-Range"] = etag
            resp = self.request("GET", path, headers=headers, expected=(200, 206))
            try:
                if resp.status == 206:
                    start, total = _content_range(resp.header("Content-Range"))
                    if start != done:
                        raise ProtocolError(f"{resp.url} resumed at byte {start}, not {done}")
                else:
                    if done:
                        _rewind(out, fp.full)
                        done = 0
                    total = resp.raw.length
                    etag = resp.header("ETag")
                    digests = parse_digest_field(resp.header("Repr-Digest"))
                    algorithm = next((a for a in ("sha256", "sha512", "sha3-256", "sha1") if a in digests), None)
                    expected = digests.get(algorithm)
                    hasher = hashlib.new(ALGORITHMS[algorithm][0]) if algorithm else None
                    info = {"owner": fp.owner, "path": fp.rel, "etag": etag,
                            "version": _int_or_none(resp.header("X-SecuriFile-Version"))}
                report_progress(progress, done, total)
                for n in self._copy_chunks(resp, out, hasher, cancel):
                    done += n
                    report_progress(progress, done, total)
                if total is not None and done != total:
                    raise http.client.IncompleteRead(b"", total - done)
                info["server"] = resp.server
            except (OSError, http.client.HTTPException) as e:
                # The holder went away mid-body: ask the cluster again for the rest.
                failures += 1
                self._selector.failed(resp.url)
                if failures > self.holder_retries:
                    raise HolderUnreachable(resp.server, e, failures) from e
                continue
            finally:
                resp.release()
            break
        actual = hasher.hexdigest() if hasher else None
        if expected is not None and actual != expected:
            if (failures or resume) and not restarted:
                # A transfer that broke off and resumed elsewhere: the part read before the
                # break may have come from a bad copy (a node breaks a read off when its copy
                # fails the digest); or the partial local file was of other bytes. Read the
                # whole file once more from the start.
                return self.download(remote, _emptied(out, fp.full), progress=progress,
                                     cancel=cancel, restarted=True)
            raise DigestMismatch(fp.full, algorithm, expected, actual)
        info.update(size=done, digest=actual, algorithm=algorithm, verified=expected is not None)
        return info

    def _copy_chunks(self, resp, out, hasher, cancel):
        """Copy the body to ``out`` chunk by chunk, yielding the size of each."""
        buf = bytearray(self.chunk_size)
        view = memoryview(buf)
        while True:
            check_cancel(cancel)
            n = resp.raw.readinto(buf)
            if not n:
                return
            chunk = view[:n]
            if hasher is not None:
                hasher.update(chunk)
            try:
                while chunk:
                    written = out.write(chunk)
                    chunk = chunk[len(chunk) if written is None else written:]
            except OSError as e:
                raise LocalFileError(f"cannot write: {e.strerror or e}") from e
            yield n

    def get(self, remote, local, *, progress=None, cancel=None):
        """Download ``owner/path`` to the local path ``local``, all or nothing.

        Bytes go to a temp file next to the target, renamed over it only once complete and
        verified; on any error the temp file is removed and the target left untouched.
        """
        with AtomicFile(local) as f:
            info = self.download(remote, f, progress=progress, cancel=cancel)
            f.commit()
        info["local"] = str(local)
        return info

    def get_bytes(self, remote, *, cancel=None):
        """The whole content of ``owner/path`` in memory (small files, tests)."""
        buf = io.BytesIO()
        self.download(remote, buf, cancel=cancel)
        return buf.getvalue()

    def read_range(self, remote, start, length):
        """``length`` bytes from ``start`` (fewer at the end of the file); not digest-checked."""
        if start < 0 or length <= 0:
            raise ValueError("start must be >= 0 and length > 0")
        headers = {"Range": f"bytes={start}-{start + length - 1}"}
        resp = self.request("GET", file_url_path(parse_remote(remote)), headers=headers,
                            expected=(200, 206))
        try:
            if resp.status == 200:  # the server ignored Range: skip to the part asked for
                resp.raw.read(start)
            return resp.raw.read(length)
        finally:
            resp.release()

    def stat(self, remote):
        """Size, digest, version and ETag of ``owner/path`` from ``HEAD``."""
        fp = parse_remote(remote)
        resp = self.request("HEAD", file_url_path(fp))
        try:
            digests = parse_digest_field(resp.header("Repr-Digest"))
            algorithm = next(iter(digests), None)
            return {
                "owner": fp.owner, "path": fp.rel,
                "size": _int_or_none(resp.header("Content-Length")),
                "digest": digests.get(algorithm), "algorithm": algorithm,
                "version": _int_or_none(resp.header("X-SecuriFile-Version")),
                "etag": resp.header("ETag"),
                "modified": resp.header("Last-Modified"),
                "server": resp.server,
            }
        finally:
            resp.release()

    def list(self, prefix):
        """Every file under ``owner/dir/`` (recursive), as the servers' JSON records."""
        resp = self.request("GET", folder_url_path(prefix))
        data = resp.json()
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list):
            raise ProtocolError(f"{resp.url} answered a listing without 'files'")
        return files

    def delete(self, remote):
        """Delete ``owner/path`` everywhere (owner only)."""
        self.request("DELETE", file_url_path(parse_remote(remote)), expected=(200, 204)).release()

    # -- folders --

    def put_tree(self, local, remote, *, progress=None, cancel=None, on_file=None, parallel=1):
        """Upload a file, or every file under a folder, as ``plan_upload`` maps them, up to
        ``parallel`` files at a time (``plans.transfer_plan``).

        ``progress(done, total)`` counts bytes over the whole tree; ``on_file(local, remote,
        record)`` is called after each file. Returns the records.
        """
        plan = plan_upload(local, remote)
        return transfer_plan(plan, lambda src, dst, per_file, stop: self.put(
            src, dst, progress=per_file, cancel=stop), progress, on_file, parallel=parallel,
            cancel=cancel, worker=self.worker)

    def get_tree(self, remote_prefix, local_dir, *, progress=None, cancel=None, on_file=None,
                 parallel=1):
        """Download every file under ``remote_prefix`` into ``local_dir`` (same layout)."""
        plan = plan_download(self.list(remote_prefix), remote_prefix, local_dir)
        return self.get_plan(plan, progress=progress, cancel=cancel, on_file=on_file,
                             parallel=parallel)

    def get_plan(self, plan, *, progress=None, cancel=None, on_file=None, parallel=1):
        """Download the files of a ``plan_download`` plan, up to ``parallel`` at a time."""

        def get(remote, local, per_file, stop):
            local.parent.mkdir(parents=True, exist_ok=True)
            return self.get(remote, local, progress=per_file, cancel=stop)

        return transfer_plan(plan, get, progress, on_file, parallel=parallel, cancel=cancel,
                             worker=self.worker)

    def delete_all(self, names, *, progress=None, cancel=None, on_file=None, parallel=1):
        """Delete the files ``names`` (``owner/path``), up to ``parallel`` at a time;
        ``progress(done, total)`` counts files, ``on_file(name, None, None)`` follows each."""
        plan = [(name, None, 1) for name in names]

        def delete(name, _target, per_file, stop):
            check_cancel(stop)
            self.delete(name)
            report_progress(per_file, 1, 1)

        return transfer_plan(plan, delete, progress, on_file, parallel=parallel, cancel=cancel,
                             worker=self.worker)


def _file_digest(path, algorithm, chunk_size, cancel=None):
    h = hashlib.new(ALGORITHMS[algorithm][0])
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            check_cancel(cancel)
            h.update(view[:n])
    return h.hexdigest()


def _content_range(value):
    """(first byte, total) from ``bytes A-B/T``."""
    try:
        unit, _, spec = (value or "").partition(" ")
        span, _, total = spec.partition("/")
        first = int(span.split("-")[0])
        return first, (None if total == "*" else int(total))
    except ValueError:
        raise ProtocolError(f"bad Content-Range {value!r}") from None


def _emptied(out, name):
    """``out`` emptied for a download from the start (ProtocolError if it cannot be)."""
    _rewind(out, name)
    return out


def _rewind(out, name):
    try:
        out.seek(0)
        out.truncate()
    except (OSError, io.UnsupportedOperation) as e:
        raise ProtocolError(f"cannot resume {name} and cannot restart an unseekable output") from e


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
