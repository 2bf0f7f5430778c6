"""Path rules for ``owner/rel/path`` names: the one place that decides what a name may be,
and how a name is written in a URL.

Every name is checked here before it touches a disk or a database, so nothing outside a
node's data directory can ever be addressed.
"""
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

from .errors import InvalidPath

MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 1024
MAX_DEPTH = 64
USERNAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# An e-mail address the mailer can write into a To: header: an ASCII dot-atom local part
# and a host name (RFC 5321/5322, without quoted local parts or address literals).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_RE = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*$")
MAX_EMAIL_LENGTH = 254


@dataclass(frozen=True, order=True)
class FilePath:
    """A validated file name: the owner's namespace and the path inside it."""

    owner: str
    rel: str

    @property
    def full(self):
        return f"{self.owner}/{self.rel}"

    @property
    def segments(self):
        return tuple(self.rel.split("/"))

    def __str__(self):
        return self.full


def check_username(name):
    """A user name is also a namespace folder name, so it is kept short and plain."""
    # fullmatch: with match, '$' would also accept a trailing newline ("alice\n").
    if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
        raise InvalidPath(
            f"invalid user name {name!r}: use 1-32 lower-case letters, digits, '-' or '_', "
            "starting with a letter",
            code="invalid_username",
        )
    return name


def _check_segment(seg):
    if seg == "":
        raise InvalidPath("empty path segment ('//', or a leading or trailing '/')")
    if seg in (".", ".."):
        raise InvalidPath(f"path segment {seg!r} is not allowed")
    if "\\" in seg:
        raise InvalidPath("backslashes are not allowed in paths")
    for ch in seg:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise InvalidPath(f"control or unassigned character U+{ord(ch):04X} in path")
    if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise InvalidPath(f"path segment longer than {MAX_SEGMENT_BYTES} bytes")


def parse_path(text, *, allow_folder=False):
    """Validate ``owner/rel/path`` and return a FilePath.

    With ``allow_folder`` a trailing '/' or a bare owner is accepted and names a folder
    (``rel`` is then '' or ends without the slash).
    """
    if not isinstance(text, str):
        raise InvalidPath("path must be a string")
    if text.startswith("/"):
        raise InvalidPath("absolute paths are not allowed: use owner/path")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from a JSON "\ud800" escape
        raise InvalidPath("path is not valid Unicode (lone surrogate)") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidPath(f"path longer than {MAX_PATH_BYTES} bytes")
    if unicodedata.normalize("NFC", text) != text:
        raise InvalidPath("path must be in Unicode NFC form")
    if allow_folder and text.endswith("/"):
        text = text[:-1]
    owner, sep, rel = text.partition("/")
    check_username(owner)
    if not sep or rel == "":
        if allow_folder and sep:  # 'owner//': an empty segment, not the namespace root
            raise InvalidPath("empty path segment ('//', or a leading or trailing '/')")
        if allow_folder:
            return FilePath(owner, "")
        raise InvalidPath("path needs a file name after the owner: owner/path")
    segments = rel.split("/")
    if len(segments) > MAX_DEPTH:
        raise InvalidPath(f"path deeper than {MAX_DEPTH} folders")
    for seg in segments:
        _check_segment(seg)
    return FilePath(owner, rel)


def file_url(fp, base="", route="/files/"):
    """Where ``fp`` is on a server: ``base`` + ``route`` + the name percent-encoded segment by
    segment (``/files/alice/a%20b.txt``); a folder's (``rel`` '') ends with its owner's '/'."""
    return base.rstrip("/") + route + quote(fp.owner, safe="") + "/" + quote(fp.rel, safe="/")
