"""What a certificate says and where the certificates lie, without the ``cryptography``
package: a storage node reads identities from the dicts ``ssl`` gives it and never makes a
certificate, and that package costs a process about 10 MiB of memory (``certs.py``, which
makes them, needs it).

The role of a certificate (node, admin, user, monitor) is its subject's organisational unit,
so a node's peer endpoints can tell a fellow node from a user even though one CA signs both.
"""
import ssl
from dataclasses import dataclass
from pathlib import Path

ROLE_NODE, ROLE_ADMIN, ROLE_USER, ROLE_MONITOR = "node", "admin", "user", "monitor"
# Every server certificate also names NAME.ROLE.securifile (e.g. node1.node.securifile). User
# names cannot hold a dot, so a peer check by name (rsyslog's permittedPeer) matches server
# certificates only, never a user's certificate with a server's name as its common name.
IDENTITY_SUFFIX = ".securifile"


def server_identity(name, role=ROLE_NODE):
    """The DNS name that proves a certificate belongs to server ``name`` in ``role``."""
    return f"{name}.{role}{IDENTITY_SUFFIX}"


@dataclass(frozen=True)
class CertLayout:
    """Where each generated file lives inside a certificate folder."""

    root: Path

    @property
    def ca_cert(self):
        return self.root / "ca.crt"

    @property
    def ca_key(self):
        return self.root / "ca.key"

    @property
    def token_private_key(self):
        return self.root / "token-signing.key"

    @property
    def token_public_key(self):
        return self.root / "token-signing.pub"

    def server_cert(self, name):
        return self.root / "servers" / f"{name}.crt"

    def server_key(self, name):
        return self.root / "servers" / f"{name}.key"

    def user_cert(self, name):
        return self.root / "users" / f"{name}.crt"

    def user_key(self, name):
        return self.root / "users" / f"{name}.key"

    def monitor_cert(self, name):
        return self.root / "monitors" / f"{name}.crt"

    def monitor_key(self, name):
        return self.root / "monitors" / f"{name}.key"


def subject_identity(peercert):
    """(common name, role) from the dict ``ssl.SSLSocket.getpeercert()`` returns."""
    fields = {}
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            fields[key] = value
    return fields.get("commonName"), fields.get("organizationalUnitName")


def peer_credential(peercert):
    """(account id, credential id, not-after epoch, credential generation) of a verified
    peer certificate dict."""
    fields = {}
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            fields[key] = value
    serial = peercert.get("serialNumber")
    not_after = peercert.get("notAfter")
    expires = ssl.cert_time_to_seconds(not_after) if not_after else None
    try:
        generation = int(fields.get("generationQualifier") or 0)
    except ValueError:
        generation = -1  # not one we signed: matches no account
    return fields.get("userId"), f"cert:{serial}" if serial else None, expires, generation
