"""Where the servers are and which credentials to present: a cluster file or a saved login.

``ClientSettings`` comes from the launcher's ``cluster.json`` or from the folder that
``securifile login`` fills (``LoginFolder``, by default ``~/.config/securifile``).
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path

from securifile.common.durable import fsync_dir

from .errors import LocalFileError


def read_token_file(path):
    """The raw token in ``path`` (surrounding whitespace removed)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise LocalFileError(f"cannot read token file {path}: {e.strerror or e}") from e
    if not token:
        raise LocalFileError(f"token file {path} is empty")
    return token


def read_json(path, name, advice=""):
    """The JSON in ``path``; LocalFileError naming the file as ``name`` (``advice`` after
    a file that is not JSON)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise LocalFileError(f"cannot read {name}: {e.strerror or e}") from e
    except ValueError as e:
        raise LocalFileError(f"{name} is not valid JSON: {e}{advice}") from e


@dataclass
class ClientSettings:
    """Where the servers are and which credentials to present."""

    servers: list
    ca: str = None
    cert: str = None
    key: str = None
    token: str = None
    username: str = None
    # The admin server: the list of running servers comes from it. Several instances as
    # "URL,URL" (AdminClient tries them in turn).
    admin_url: str = None

    @classmethod
    def from_cluster_file(cls, path):
        """Read the launcher's ``cluster.json``; relative paths are relative to that file."""
        path = Path(path)
        data = read_json(path, f"cluster file {path}")
        base = path.resolve().parent

        def local(p):
            return str(base / p) if p else None

        user = data.get("user") or {}
        token_file = local(user.get("token_file"))
        return cls(
            servers=[s["url"] for s in data.get("servers", [])],
            ca=local(data.get("ca_cert")) if data.get("tls", True) else None,
            cert=local(user.get("cert")) if data.get("tls", True) else None,
            key=local(user.get("key")) if data.get("tls", True) else None,
            token=read_token_file(token_file) if token_file and os.path.exists(token_file) else None,
            username=user.get("username"),
            admin_url=saved_admin_url(data.get("admin") or {}, "url"),
        )


def saved_admin_url(info, key="admin_url"):
    """Every admin server instance a saved login or cluster file names, as "URL,URL"
    (``admin_urls``, a list, is there when there are several)."""
    urls = info.get("admin_urls") or info.get("urls") or ([info[key]] if info.get(key) else [])
    return ",".join(str(u) for u in urls) or None


def default_login_dir(env=None):
    """``$XDG_CONFIG_HOME/securifile`` or ``~/.config/securifile``; None without a home."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore a relative value
        return Path(xdg) / "securifile"
    home = env.get("HOME")
    return Path(home) / ".config" / "securifile" if home else None


class LoginFolder:
    """What ``securifile login`` keeps: the admin URL, a token, a client key and certificate.

    The folder is 0700 and every file 0600, the key and the token being the user's identity.
    ``login.json`` is written last, so a folder with it holds a complete login.
    """

    LOGIN, TOKEN, KEY, CERT, CA = "login.json", "token", "client.key", "client.crt", "ca.crt"
    FILES = (LOGIN, TOKEN, KEY, CERT, CA)

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def default(cls, env=None):
        """The user's folder, or None when there is no home to keep it in."""
        path = default_login_dir(env)
        return cls(path) if path else None

    def file(self, name):
        return self.path / name

    def exists(self):
        return self.file(self.LOGIN).is_file()

    def read(self):
        """The saved ``login.json``: admin_url, username, servers, and validity dates."""
        path = self.file(self.LOGIN)
        data = read_json(path, str(path), ": run 'securifile login' again")
        if not isinstance(data, dict) or not data.get("admin_url"):
            raise LocalFileError(f"{path} names no admin server: run 'securifile login' again")
        return data

    def settings(self):
        """ClientSettings for the saved login (servers: the list as of the last login)."""
        info = self.read()

        def present(name):
            return str(self.file(name)) if self.file(name).is_file() else None

        token = present(self.TOKEN)
        cert, key = present(self.CERT), present(self.KEY)
        return ClientSettings(
            servers=[str(u) for u in info.get("servers") or []], ca=present(self.CA),
            cert=cert if key else None, key=key if cert else None,
            token=read_token_file(token) if token else None,
            username=info.get("username"), admin_url=saved_admin_url(info))

    def save(self, info, token, *, key_pem=None, cert_pem=None, ca_pem=None):
        """Write a login (bytes or text for the PEMs); files a new login lacks are removed."""
        contents = {self.TOKEN: token.strip() + "\n", self.KEY: key_pem, self.CERT: cert_pem,
                    self.CA: ca_pem}
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        for name, data in contents.items():
            if data is None:
                self._unlink(name)
            else:
                self._write(name, data)
        self._write(self.LOGIN, json.dumps(info, indent=2) + "\n")
        fsync_dir(self.path)

    def remove(self):
        """Delete the saved login; returns the names of the files that were there."""
        gone = [name for name in self.FILES if self._unlink(name)]
        if gone:
            fsync_dir(self.path)
        return gone

    def _write(self, name, data):
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        target = self.file(name)
        temp = self.path / f".{name}.{os.urandom(4).hex()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise

    def _unlink(self, name):
        try:
            self.file(name).unlink()
            return True
        except FileNotFoundError:
            return False
