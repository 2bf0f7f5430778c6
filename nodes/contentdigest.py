"""The ``Content-Digest`` a client declares for an upload (RFC 9530), checked as bytes arrive.

A node stores one digest algorithm (the cluster's), but a client may declare the body's
digest in any algorithm the node knows, or in several: the CLI and the TUI always send
SHA-256, curl users send what their tools give them. The node checks every declared
algorithm it supports: its own through the DiskWriter that hashes the file anyway, any
other with a hasher of its own here. Algorithms it does not know are skipped; a header that
names none it knows is refused, so a check the client asked for is never silently dropped.
"""
from securifile.common.digests import ALGORITHMS, digest_members, new_hasher
from securifile.common.errors import ApiError

from .diskfile import DigestMismatch

def parse_content_digest(header):
    """``{algorithm: hexdigest}`` for the members of ``header`` this node supports.

    Members are ``token=:base64:`` (a Structured Fields byte sequence, parameters after ``;``
    ignored). A malformed value for a supported algorithm is a 400 ``invalid_digest``; no
    supported member at all is a 400 ``unsupported_digest``.
    """
    declared, seen = {}, []
    for token, name, raw in digest_members(header):
        seen.append(token)
        if name is None:
            continue
        if isinstance(raw, ValueError):
            raise ApiError(f"Content-Digest {token} {raw}", code="invalid_digest")
        if len(raw) != new_hasher(name).digest_size:
            raise ApiError(f"Content-Digest {token} value has {len(raw)} bytes, not "
                           f"{new_hasher(name).digest_size}", code="invalid_digest")
        hexdigest = raw.hex()
        if declared.setdefault(name, hexdigest) != hexdigest:
            raise ApiError(f"Content-Digest names two different {token} values",
                           code="invalid_digest")
    if not declared:
        supported = ", ".join(token for _, token in ALGORITHMS.values())
        raise ApiError(f"Content-Digest names no algorithm this server supports "
                       f"({', '.join(t for t in seen if t) or 'none'}); use one of {supported}",
                       code="unsupported_digest")
    return declared


class DeclaredDigests:
    """The digests one upload must match: the node's own algorithm's (``own``, None if the
    client did not declare it), checked by the writer at commit; the others hashed here."""

    def __init__(self, declared, own_algorithm):
        self.own = declared.get(own_algorithm)
        self._others = {name: (new_hasher(name), hexdigest)
                        for name, hexdigest in declared.items() if name != own_algorithm}

    @classmethod
    def from_header(cls, header, own_algorithm):
        """No header: nothing to check (the node still records its own digest)."""
        return cls(parse_content_digest(header) if header else {}, own_algorithm)

    def update(self, chunk):
        for hasher, _ in self._others.values():
            hasher.update(chunk)

    def check_others(self):
        """DigestMismatch (400 ``digest_mismatch``) if a declared digest in an algorithm other
        than the node's own does not match the bytes received."""
        for name, (hasher, expected) in self._others.items():
            if hasher.hexdigest() != expected:
                raise DigestMismatch(f"{name} digest of the received bytes is "
                                     f"{hasher.hexdigest()}, not {expected} as the client said")
