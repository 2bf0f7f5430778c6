"""Files on both sides: remote names and their request paths, local files written all or
nothing, and the plans that map a folder on one side to files on the other.
"""
import io
import os
from pathlib import Path

from securifile.common.errors import InvalidPath
from securifile.common.paths import FilePath, file_url, parse_path

from .errors import BadRequest, LocalFileError, ProtocolError


# --- remote names -----------------------------------------------------------------------

def parse_remote(remote, *, folder=False):
    """A FilePath from ``owner/path`` (``folder``: ``owner``, ``owner/dir`` or ``owner/dir/``)."""
    try:
        return parse_path(remote, allow_folder=folder)
    except InvalidPath as e:
        raise BadRequest(e.status, e.code, f"{e.message}: {remote!r}") from None


def file_url_path(remote):
    """The request path for a file, percent-encoded: ``/files/owner/a%20b.txt``."""
    fp = remote if isinstance(remote, FilePath) else parse_remote(remote)
    if not fp.rel:
        raise BadRequest(400, "invalid_path", f"{fp.owner!r} is a folder, not a file")
    return file_url(fp)


def folder_url_path(prefix):
    """The listing path for a folder (always with the trailing slash): ``/files/owner/dir/``."""
    fp = prefix if isinstance(prefix, FilePath) else parse_remote(prefix, folder=True)
    return file_url(fp) + ("/" if fp.rel else "")


# --- local files ----------------------------------------------------------------------

class AtomicFile(io.FileIO):
    """A temp file next to ``target`` that replaces it on ``commit()`` and vanishes otherwise."""

    def __init__(self, target):
        self.target = Path(target)
        self.temp = self.target.with_name(f".{self.target.name}.{os.urandom(4).hex()}.part")
        try:
            super().__init__(os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
        except OSError as e:
            raise LocalFileError(f"cannot write {self.target}: {e.strerror or e}") from e
        self._committed = False

    def commit(self):
        try:
            os.fsync(self.fileno())
            super().close()
            os.replace(self.temp, self.target)
        except OSError as e:
            raise LocalFileError(f"cannot write {self.target}: {e.strerror or e}") from e
        self._committed = True

    def close(self):
        super().close()
        if not self._committed:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass

    def __exit__(self, *exc):
        self.close()


def plan_upload(local, remote):
    """[(local file, remote path, size)] for ``put LOCAL REMOTE``.

    A file goes to REMOTE (or REMOTE/<name> if REMOTE is a folder: ``owner`` or ends in '/').
    A folder's files go to REMOTE/<relative path>. Every remote name is checked up front.
    """
    local = Path(local)
    if local.is_dir():
        base = parse_remote(remote, folder=True)
        plan = []
        for dirpath, dirnames, filenames in os.walk(local):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if not path.is_file():
                    continue
                rel = path.relative_to(local).as_posix()
                target = f"{base.full.rstrip('/')}/{rel}"
                plan.append((path, parse_remote(target).full, path.stat().st_size))
        return plan
    if not local.is_file():
        raise LocalFileError(f"{local}: no such file or folder")
    if remote.endswith("/") or "/" not in remote:
        base = parse_remote(remote, folder=True)
        remote = f"{base.full.rstrip('/')}/{local.name}"
    return [(local, parse_remote(remote).full, local.stat().st_size)]


def plan_download(files, prefix, local_dir):
    """[(remote path, local path, size)] for the listing ``files`` of folder ``prefix``.

    Names come from a server, so each one is checked again: nothing may land outside
    ``local_dir``.
    """
    base = parse_remote(prefix, folder=True)
    lead = f"{base.full.rstrip('/')}/"
    root = Path(local_dir)
    plan = []
    for record in files:
        fp = parse_remote(f"{record['owner']}/{record['path']}")
        if not fp.full.startswith(lead):
            raise ProtocolError(f"listing of {lead} returned {fp.full}, outside the folder")
        rel = fp.full[len(lead):]
        plan.append((fp.full, root.joinpath(*rel.split("/")), int(record.get("size") or 0)))
    return sorted(plan)

