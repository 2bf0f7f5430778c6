"""The system's own certificate authority: CA, server and user certificates, token keys.

The role of a certificate (node, admin, user, monitor) is its subject's organisational unit,
so a node's peer endpoints can tell a fellow node from a user even though one CA signs both.
A monitoring certificate (a Prometheus server's) reads /metrics and nothing else.
"""
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .certnames import ROLE_MONITOR, ROLE_NODE, ROLE_USER, server_identity

ORGANISATION = "SecuriFile"
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
STRONG_CURVES = (ec.SECP256R1, ec.SECP384R1)
# Certificates start this long before they are issued, for clocks a little behind.
BACKDATE = datetime.timedelta(minutes=5)
MIN_RSA_BITS = 3072


def check_key_strength(public_key):
    """Raise ValueError unless the key is EC P-256/P-384, Ed25519 or RSA of 3072 bits or more."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, STRONG_CURVES):
            raise ValueError(f"EC curve {public_key.curve.name} is not accepted: use P-256 or P-384")
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        pass
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {public_key.key_size} bits is too weak: use "
                             f"{MIN_RSA_BITS} bits or more, or an EC P-256 key")
    else:
        raise ValueError(f"{type(public_key).__name__} keys are not accepted: use EC P-256/P-384, "
                         "Ed25519 or RSA >= 3072")


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key():
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path, key):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path, cert):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name, role, uid=None, generation=0):
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if uid:
        # The account's immutable id ('userId' in the subject Python's ssl module reports).
        attributes.append(x509.NameAttribute(NameOID.USER_ID, uid))
    if generation:
        # The account's credential generation: a password change makes this certificate stale.
        attributes.append(x509.NameAttribute(NameOID.GENERATION_QUALIFIER, str(int(generation))))
    return x509.Name(attributes)


def _san(names):
    entries = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


@dataclass
class CertificateAuthority:
    """A CA key and certificate loaded from (or created in) a certificate folder."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name="SecuriFile CA", days=3650):
        key = _new_key()
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path, key_path):
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        return cls(cert, key)

    def save(self, cert_path, key_path):
        _write_cert(cert_path, self.cert)
        _write_key(key_path, self.key)

    def _issue(self, subject, public_key, not_after, usages, san=None):
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(not_after, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_server(self, name, role=ROLE_NODE, hosts=DEFAULT_SERVER_NAMES, days=825):
        """A server certificate that also serves as its client certificate for peer calls."""
        key = _new_key()
        cert = self._issue(
            _name(name, role), key.public_key(), _now() + datetime.timedelta(days=days),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            _san(list(dict.fromkeys([name, server_identity(name, role), *hosts]))),
        )
        return cert, key

    def issue_user(self, username, not_after, uid=None):
        """A client certificate for a user, valid no longer than ``not_after``; ``uid`` is the
        account's immutable id, without which an admin-backed cluster refuses it."""
        key = _new_key()
        cert = self._issue(
            _name(username, ROLE_USER, uid), key.public_key(), not_after,
            [ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        return cert, key

    def issue_monitor(self, name, days=825):
        """A client certificate for a monitoring system: it reads /metrics, nothing else."""
        key = _new_key()
        cert = self._issue(
            _name(name, ROLE_MONITOR), key.public_key(), _now() + datetime.timedelta(days=days),
            [ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        return cert, key

    def sign_user_csr(self, csr_pem, username, not_after, uid=None, generation=0):
        """Sign a user's CSR; the subject (name, role, account id) is ours to set, whatever
        the CSR asked for."""
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("CSR signature is invalid")
        check_key_strength(csr.public_key())
        return self._issue(
            _name(username, ROLE_USER, uid, generation), csr.public_key(), not_after,
            [ExtendedKeyUsageOID.CLIENT_AUTH],
        )


def ensure_ca(layout):
    """Load the CA from the folder, creating it (and the token signing key) when missing."""
    if layout.ca_cert.exists() and layout.ca_key.exists():
        ca = CertificateAuthority.load(layout.ca_cert, layout.ca_key)
    else:
        ca = CertificateAuthority.create()
        ca.save(layout.ca_cert, layout.ca_key)
    if not layout.token_private_key.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        _write_key(layout.token_private_key, key)
        layout.token_public_key.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return ca


def _san_of(cert_path):
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def names_server(cert_path, name, role, hosts=()):
    """Whether the certificate carries the server identity name (older ones do not) and
    every one of ``hosts`` (host names and addresses)."""
    san = _san_of(cert_path)
    if san is None:
        return False
    named = set(san.get_values_for_type(x509.DNSName))
    named |= {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    wanted = set()
    for h in hosts:
        try:
            wanted.add(str(ipaddress.ip_address(h)))
        except ValueError:
            wanted.add(h)
    return server_identity(name, role) in named and wanted <= named


def ensure_server_cert(layout, ca, name, role=ROLE_NODE, hosts=DEFAULT_SERVER_NAMES):
    """The server's certificate and key, issued when missing or lacking the identity name or
    one of ``hosts`` (a server given a new address gets a certificate that names it)."""
    if not (layout.server_cert(name).exists() and layout.server_key(name).exists()
            and names_server(layout.server_cert(name), name, role, hosts)):
        cert, key = ca.issue_server(name, role, hosts)
        _write_cert(layout.server_cert(name), cert)
        _write_key(layout.server_key(name), key)
    return layout.server_cert(name), layout.server_key(name)


def ensure_user_cert(layout, ca, username, not_after, uid=None):
    """The user's certificate and key, issued when missing, made for another account id, or
    past half the life asked for (certificates are short-lived: a launcher run renews)."""
    path = layout.user_cert(username)
    if not (path.exists() and layout.user_key(username).exists()
            and (uid is None or certificate_uid(path) == uid)
            and _not_after(path) >= _now() + (not_after - _now()) / 2):
        cert, key = ca.issue_user(username, not_after, uid)
        _write_cert(layout.user_cert(username), cert)
        _write_key(layout.user_key(username), key)
    return layout.user_cert(username), layout.user_key(username)


def ensure_monitor_cert(layout, ca, name, days=825):
    if not (layout.monitor_cert(name).exists() and layout.monitor_key(name).exists()):
        cert, key = ca.issue_monitor(name, days)
        _write_cert(layout.monitor_cert(name), cert)
        _write_key(layout.monitor_key(name), key)
    return layout.monitor_cert(name), layout.monitor_key(name)


def _not_after(cert_path):
    return x509.load_pem_x509_certificate(Path(cert_path).read_bytes()).not_valid_after_utc


def certificate_uid(cert_path):
    """The account id a user certificate file carries (None for one without)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    values = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    return values[0].value if values else None


def write_cert_and_key(cert_path, key_path, cert, key):
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
