"""The saved login's credentials over their life: a key and certificate request made here,
the short-lived certificate renewed before it runs out, kept across a password change (which
revokes everything issued before it), and revoked at logout. Shared by the command line and
the terminal client."""
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from securifile.common.certs import BACKDATE

from .admin import AdminClient, AdminUnreachable
from .errors import (
    ClientError, PermissionDenied, RateLimited, ServerError, TLSFailure, Unauthorized,
)


class LoginFailed(ClientError):
    """The admin server refused the login, or could not be asked; the message says why."""


def new_key_and_csr(username):
    """(private key PEM, CSR PEM) for a fresh P-256 key; the CA sets the real subject."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, username)]))
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def login_error(e, admin_url, ca):
    """A LoginFailed with a message a user can act on."""
    if isinstance(e, Unauthorized):
        return LoginFailed(f"login failed: {e.message} ({e.code})")
    if isinstance(e, PermissionDenied) and e.code == "account_expired":
        return LoginFailed(f"login refused: {e.message}; ask an administrator to extend the "
                           f"account ({e.code})")
    if isinstance(e, PermissionDenied) and e.code == "account_disabled":
        return LoginFailed(f"login refused: {e.message}; ask an administrator ({e.code})")
    if isinstance(e, RateLimited):
        return LoginFailed(f"login refused: {e.message} ({e.code})")
    if isinstance(e, ServerError):
        return LoginFailed(f"login failed: {e.message} ({e.code}, HTTP {e.status})")
    if isinstance(e, TLSFailure):
        return LoginFailed(f"{e}; check that {ca} is the CA certificate of this cluster "
                           f"(certs/ca.crt where it was set up) and that {admin_url} is right")
    if isinstance(e, AdminUnreachable):
        return LoginFailed(f"{e}; check the URL and that the admin server runs")
    return LoginFailed(f"login failed: {e}")


def revoke_saved(folder, timeout):
    """Have the admin server revoke the saved token and certificate (each used once, on its
    own, so that each is the credential revoked). Returns what could not be revoked."""
    settings = folder.settings()
    failed = []
    for what, kwargs in (("token", {"token": settings.token}),
                         ("certificate", {"cert": settings.cert, "key": settings.key})):
        if not all(kwargs.values()):
            continue
        try:
            with AdminClient(settings.admin_url, ca=settings.ca, timeout=timeout,
                             **kwargs) as admin:
                admin.logout()
        except Unauthorized:
            pass  # expired or revoked already: nothing left to revoke
        except (ClientError, OSError) as e:
            failed.append(f"{what} ({e})")
    return failed


def certificate_dates(path):
    """(not before, not after) of a PEM certificate file."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def renewal_due(folder, now=None):
    """Whether the saved certificate has used up half its life (or is gone past its end);
    its life counted from its issue, not from its back-dated start."""
    path = folder.file(folder.CERT)
    if not path.is_file() or not folder.file(folder.KEY).is_file():
        return False
    start, end = certificate_dates(path)
    issued = min(start + BACKDATE, end)
    now = now or datetime.now(timezone.utc)
    return now >= issued + (end - issued) / 2


def renew(folder, timeout, with_token=False):
    """A new key and short-lived certificate for the saved login. Asked for with the current
    certificate while it lasts, else (or ``with_token``) with the token; the admin server
    checks the account (removed, disabled, expired) before it signs. Returns the new
    certificate's end."""
    info = folder.read()
    settings = folder.settings()
    _start, end = certificate_dates(settings.cert)
    if end > datetime.now(timezone.utc) and not with_token:
        credentials = {"cert": settings.cert, "key": settings.key}
    elif settings.token:
        credentials = {"token": settings.token}
    else:
        raise LoginFailed("the certificate has expired and no token is saved: run "
                          "'securifile login' again")
    key_pem, csr_pem = new_key_and_csr(info["username"])
    try:
        with AdminClient(settings.admin_url, ca=settings.ca, timeout=timeout,
                         **credentials) as admin:
            signed = admin.sign_csr(csr_pem)
    except ClientError as e:
        raise login_error(e, settings.admin_url, settings.ca) from e
    info["certificate_not_after"] = signed.get("not_after")
    token_path = folder.file(folder.TOKEN)
    token = token_path.read_text().strip() if token_path.is_file() else ""
    folder.save(info, token, key_pem=key_pem, cert_pem=signed["certificate"],
                ca_pem=folder.file(folder.CA).read_text() if folder.file(folder.CA).is_file()
                else None)
    if not token:
        folder.file(folder.TOKEN).unlink(missing_ok=True)
    return signed.get("not_after")


def keep_login_after_password_change(folder, answer, timeout):
    """A password change revoked the saved token and certificate: save the fresh token the
    change answered with, and have a new certificate signed with it."""
    info = folder.read()
    info["token_expires_at"] = answer.get("expires_at")
    info["account_valid_until"] = answer.get("valid_until", info.get("account_valid_until"))

    def kept(name):
        path = folder.file(name)
        return path.read_bytes() if path.is_file() else None

    folder.save(info, answer["token"], key_pem=kept(folder.KEY), cert_pem=kept(folder.CERT),
                ca_pem=kept(folder.CA))
    if folder.file(folder.CERT).is_file() and folder.file(folder.KEY).is_file():
        renew(folder, timeout, with_token=True)
