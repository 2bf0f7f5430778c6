"""Digest algorithms by their configuration names, and RFC 9530 ``Repr-Digest`` values."""
import base64
import hashlib

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


def parse_digest_field(value):
    """``{algorithm: hexdigest}`` from an RFC 9530 digest field; unknown algorithms skipped."""
    found = {}
    for member in (value or "").split(","):
        key, sep, rest = member.strip().partition("=")
        rest = rest.split(";", 1)[0].strip()
        name = _BY_TOKEN.get(key.strip().lower())
        if not sep or name is None or len(rest) < 2 or rest[0] != ":" or rest[-1] != ":":
            continue
        try:
            found[name] = base64.b64decode(rest[1:-1], validate=True).hex()
        except ValueError:
            continue
    return found


def file_digest(path, name, chunk_size=1 << 20):
    """Hex digest of a file on disk, read in chunks so memory stays flat."""
    h = new_hasher(name)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()
