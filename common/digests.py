"""Digest algorithms by their configuration names, and RFC 9530 ``Repr-Digest`` values."""
import base64
import hashlib
import os

ALGORITHMS = {
    "sha1": ("sha1", "sha"),
    "sha256": ("sha256", "sha-256"),
    "sha512": ("sha512", "sha-512"),
    "sha3-256": ("sha3_256", "sha3-256"),
}
DEFAULT_ALGORITHM = "sha256"


def check_algorithm(name):
    if name not in ALGORITHMS:
        raise ValueError(f"unknown digest algorithm {name!r}; choose one of {sorted(ALGORITHMS)}")
    return name


def new_hasher(name):
    return hashlib.new(ALGORITHMS[check_algorithm(name)][0])


def repr_digest(name, hexdigest):
    """The ``Repr-Digest`` header value (RFC 9530) for a hex digest."""
    token = ALGORITHMS[name][1]
    return f"{token}=:{base64.b64encode(bytes.fromhex(hexdigest)).decode()}:"


_BY_TOKEN = {token: name for name, (_, token) in ALGORITHMS.items()}


def digest_members(field):
    """``(token, algorithm, value)`` for each member of an RFC 9530 digest field such as
    ``sha-256=:BASE64:;param, sha=:BASE64:``: ``algorithm`` is None for a token we do not
    know, ``value`` the digest's bytes, or a ValueError saying why it is malformed."""
    for member in field.split(","):
        token, sep, value = member.strip().partition("=")
        token = token.strip().lower()
        value = value.split(";", 1)[0].strip()
        if not sep or len(value) < 2 or value[0] != ":" or value[-1] != ":":
            decoded = ValueError("value must be ':base64:'")
        else:
            try:
                decoded = base64.b64decode(value[1:-1], validate=True)
            except ValueError:
                decoded = ValueError("value is not valid base64")
        yield token, _BY_TOKEN.get(token), decoded


def parse_digest_field(value):
    """``{algorithm: hexdigest}`` from a digest field (``None``: none); members in unknown
    algorithms or malformed are skipped (the client's reading of ``Repr-Digest``)."""
    return {name: decoded.hex() for _, name, decoded in digest_members(value or "")
            if name is not None and isinstance(decoded, bytes)}


def file_digest(path, name, chunk_size=1 << 20):
    """Hex digest of a file on disk, read in chunks so memory stays flat."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return fd_digest(fd, name, chunk_size)
    finally:
        os.close(fd)


def fd_digest(fd, name, chunk_size=1 << 20):
    """Hex digest of the file open as ``fd``, from its start (``pread``: its offset is left
    alone), read in chunks so memory stays flat."""
    h = new_hasher(name)
    offset = 0
    while chunk := os.pread(fd, chunk_size, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()
