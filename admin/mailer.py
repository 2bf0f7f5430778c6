"""Account e-mails: what they say, and how they leave (an outbox folder, or SMTP over TLS).

A fresh install has no mail server, so by default each message is written as an ``.eml`` file
into an outbox folder; production sends through SMTP with STARTTLS or implicit TLS, always
verifying the server's certificate. Sending is synchronous (smtplib); the admin server calls
``Mailer.send`` in a worker thread, and a ``MailError`` never undoes the account it reports on.
"""
import datetime
import html
import ipaddress
import logging
import math
import os
import re
import secrets
import smtplib
import socket
import ssl
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path

from securifile.common.admin_urls import parse_admin_urls
from securifile.common.durable import fsync_dir
from securifile.common.times import from_epoch, utc

MODES = ("outbox", "smtp")
SECURITIES = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
DEFAULT_SENDER = "SecuriFile <no-reply@localhost>"
PRODUCT = "SecuriFile"


class MailError(Exception):
    """A message could not be delivered to the outbox or the mail server; says why."""


def is_loopback_host(host):
    """True for ``localhost`` and loopback addresses: the only hosts plain SMTP may reach."""
    host = (host or "").strip().strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class MailSettings:
    """How account e-mails leave the admin server; checked when built.

    ``smtp_port`` defaults to the port of the chosen security (587, 465 or 25). ``ca_file`` is
    the trust for the mail server's certificate (the system's trust store when unset);
    verification of the certificate and host name is always on.
    """

    mode: str = "outbox"
    outbox_dir: Path = Path("outbox")
    smtp_host: str = "localhost"
    smtp_port: int | None = None
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # kept out of logs
    sender: str = DEFAULT_SENDER
    ca_file: Path | None = None
    timeout: float = 10.0

    def __post_init__(self):
        # Values may come as strings from the environment or a TOML file.
        self.outbox_dir = Path(self.outbox_dir)
        self.ca_file = Path(self.ca_file) if self.ca_file else None
        if self.smtp_port:
            self.smtp_port = int(self.smtp_port)
        else:
            self.smtp_port = DEFAULT_PORTS.get(self.security, 0)
        self.timeout = float(self.timeout)
        self.username = self.username or None
        self.password = self.password or None
        if self.mode not in MODES:
            raise ValueError(f"mail mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.security not in SECURITIES:
            raise ValueError(
                f"mail security must be one of {', '.join(SECURITIES)}, not {self.security!r}")
        if not 0 < self.smtp_port < 65536:
            raise ValueError(f"SMTP port {self.smtp_port} is out of range")
        if self.timeout <= 0:
            raise ValueError("the mail timeout must be positive")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both an SMTP username and a password, or neither")
        if "@" not in parseaddr(self.sender)[1]:
            raise ValueError(f"the mail sender {self.sender!r} is not an e-mail address")
        plain = self.mode == "smtp" and self.security == "none"
        if plain and not is_loopback_host(self.smtp_host):
            raise ValueError(
                f"refusing to send mail without TLS to {self.smtp_host}: security 'none' is "
                "only allowed for a mail server on this machine (localhost, 127.0.0.1, ::1); "
                "use 'starttls' or 'tls'")


class Mailer:
    """Delivers messages as the settings say: ``send(message)`` or a ``MailError``."""

    def __init__(self, settings, log=None, clock=time.time):
        self.settings = settings
        self.log = log or logging.getLogger(__name__)
        self.clock = clock

    def send(self, message):
        """Deliver ``message``; return the outbox file it was written to (None over SMTP).

        A missing From is the configured sender; a missing Date or Message-ID is added.
        """
        if not message["To"]:
            raise MailError("the message has no recipient (To header)")
        self._complete_headers(message)
        if self.settings.mode == "outbox":
            return self._write_to_outbox(message)
        self._send_smtp(message)
        return None

    def _complete_headers(self, message):
        if not message["From"]:
            message["From"] = self.settings.sender
        if not message["Date"]:
            message["Date"] = format_datetime(from_epoch(self.clock()))
        if not message["Message-ID"]:
            message["Message-ID"] = make_msgid(domain=_domain_of(message["From"]))

    def _write_to_outbox(self, message):
        folder = self.settings.outbox_dir
        stamp = from_epoch(self.clock())
        name = "{}-{}-{}.eml".format(
            stamp.strftime("%Y%m%dT%H%M%S.%fZ"), _file_safe(_first_recipient(message)),
            secrets.token_hex(4))
        path = folder / name
        tmp = None
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp creates the file 0600: the message holds an initial password.
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(message.as_bytes(policy=policy.SMTP))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            fsync_dir(folder)
        except OSError as e:
            raise MailError(f"could not write the message to the outbox {folder}: "
                            f"{e.strerror or e}") from e
        finally:
            if tmp is not None:
                _remove_quietly(tmp)
        self.log.info("mail to %s written to %s", message["To"], path)
        return path

    def _send_smtp(self, message):
        s = self.settings
        where = f"{s.smtp_host}:{s.smtp_port}"
        try:
            context = self._tls_context() if s.security != "none" else None
            if s.security == "tls":
                client = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.timeout,
                                          context=context)
            else:
                client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout)
            with client:
                if s.security == "starttls":
                    client.ehlo()
                    if not client.has_extn("starttls"):
                        raise MailError(f"the mail server {where} does not offer STARTTLS; "
                                        "refusing to send in clear text")
                    client.starttls(context=context)
                if s.username:
                    client.login(s.username, s.password)
                client.send_message(message)
        except MailError:
            raise
        except Exception as e:  # every failure becomes one readable sentence for the admin
            raise MailError(_explain(e, where, s)) from e
        self.log.info("mail to %s sent through %s (%s)", message["To"], where, s.security)

    def _tls_context(self):
        ca_file = self.settings.ca_file
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as e:
            raise MailError(f"could not load the mail server's CA file {ca_file}: {e}") from e
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def _explain(e, where, settings):
    """A sentence for an administrator: what went wrong talking to the mail server."""
    if isinstance(e, ssl.SSLCertVerificationError):
        trust = f"the CA file {settings.ca_file}" if settings.ca_file else "the system trust store"
        return (f"the mail server {where} presented a certificate that could not be verified "
                f"against {trust}: {e.verify_message or e.reason}")
    if isinstance(e, ssl.SSLError):
        return f"TLS with the mail server {where} failed: {e.reason or e}"
    if isinstance(e, smtplib.SMTPAuthenticationError):
        return (f"the mail server {where} refused the login of {settings.username!r}: "
                f"{e.smtp_code} {_text(e.smtp_error)}")
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{addr} ({code} {_text(msg)})"
                            for addr, (code, msg) in e.recipients.items())
        return f"the mail server {where} refused the recipient: {refused}"
    if isinstance(e, smtplib.SMTPSenderRefused):
        return (f"the mail server {where} refused the sender {e.sender}: "
                f"{e.smtp_code} {_text(e.smtp_error)}")
    if isinstance(e, smtplib.SMTPResponseException):
        return f"the mail server {where} answered {e.smtp_code} {_text(e.smtp_error)}"
    if isinstance(e, smtplib.SMTPNotSupportedError):
        return f"the mail server {where} does not support this: {e}"
    if isinstance(e, smtplib.SMTPServerDisconnected):
        return f"the mail server {where} closed the connection: {e}"
    if isinstance(e, TimeoutError):  # socket.timeout too
        return f"the mail server {where} did not answer within {settings.timeout:g} s"
    if isinstance(e, ConnectionRefusedError):
        return f"could not connect to the mail server {where}: connection refused"
    if isinstance(e, socket.gaierror):
        return f"could not find the mail server {settings.smtp_host}: {e.strerror}"
    if isinstance(e, OSError):
        return f"could not talk to the mail server {where}: {e.strerror or e}"
    return f"sending through the mail server {where} failed: {e}"


def _text(smtp_error):
    if isinstance(smtp_error, bytes):
        return smtp_error.decode("utf-8", "replace")
    return str(smtp_error)


def _domain_of(address):
    return parseaddr(str(address))[1].rpartition("@")[2] or "localhost"


def _first_recipient(message):
    addresses = getattr(message["To"], "addresses", ())
    return addresses[0].addr_spec if addresses else parseaddr(str(message["To"]))[1]


def _file_safe(text, limit=64):
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", text)[:limit] or "unknown"


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


# --- The messages ---------------------------------------------------------------------------

class _Body:
    """Paragraphs, fields and code blocks, rendered once as plain text and once as HTML.

    Lines stay short so that an ASCII message goes out as readable 7bit text, not
    quoted-printable: the outbox files are read by people.
    """

    WIDTH = 72

    def __init__(self):
        self.blocks = []

    def para(self, text):
        self.blocks.append(("para", text))

    def code(self, *lines):
        self.blocks.append(("code", "\n".join(lines)))

    def fields(self, *pairs):
        self.blocks.append(("fields", pairs))

    def text(self):
        out = []
        for kind, content in self.blocks:
            if kind == "para":
                out.append(textwrap.fill(content, self.WIDTH))
            elif kind == "code":
                out.append("\n".join("    " + line for line in content.splitlines()))
            else:
                width = max(len(label) for label, _ in content) + 1
                out.append("\n".join(f"  {label + ':':<{width}} {value}"
                                     for label, value in content))
        return "\n\n".join(out) + "\n"

    def html(self, title):
        out = []
        for kind, content in self.blocks:
            if kind == "para":
                paragraph = f"<p>{html.escape(content, quote=False)}</p>"
                out.append(textwrap.fill(paragraph, self.WIDTH))
            elif kind == "code":
                out.append(f"<pre>{html.escape(content, quote=False)}</pre>")
            else:
                rows = "".join(f"<tr><th align=\"left\">{html.escape(label, quote=False)}</th>\n"
                               f"  <td><code>{html.escape(value, quote=False)}</code></td></tr>\n"
                               for label, value in content)
                out.append(f"<table>\n{rows}</table>")
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}</title></head>\n<body>\n"
                + "\n".join(out) + "\n</body></html>\n")


def _days_left(valid_until, now):
    # Rounded up: an account made for 365 days a moment ago still has 365 days.
    return max(0, math.ceil((valid_until - now).total_seconds() / 86400))


def _message(subject, to_name, to_email, body, sender, now):
    message = EmailMessage()
    message["Subject"] = subject
    if sender:
        message["From"] = sender
    try:
        message["To"] = Address(display_name=to_name, addr_spec=to_email)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{to_email!r} is not a usable e-mail address: {e}") from e
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=_domain_of(sender or DEFAULT_SENDER))
    message.set_content(body.text())
    message.add_alternative(body.html(subject), subtype="html")
    return message


def account_email(username, email, enrolment_code, admin_url, valid_until, node_urls=None,
                  cert_note=None, *, enrolment_expires=None, sender=None, now=None):
    """The e-mail to a new account's owner: how to set the password, validity, how to log in.

    It never holds a password: ``enrolment_code`` (single use, valid until
    ``enrolment_expires``) lets the owner set one; without a code the administrator gave the
    initial password by other means. Without ``sender``, From is left for ``Mailer.send``.
    """
    now = utc(now or datetime.datetime.now(datetime.timezone.utc))
    valid_until = utc(valid_until)
    days = _days_left(valid_until, now)
    # Several admin server instances ("URL,URL"): the client commands name them all, curl
    # the first.
    admin_urls = parse_admin_urls(admin_url) or [""]
    admin_url, admin_arg = admin_urls[0], ",".join(admin_urls)
    tls = admin_url.startswith("https:")
    cacert = "--cacert securifile-ca.pem " if tls else ""

    body = _Body()
    body.para(f"Hello {username},")
    body.para(f"an account has been created for you on {PRODUCT}, the encrypted, replicated "
              "file store.")
    if enrolment_code:
        expires = utc(enrolment_expires) if enrolment_expires else None
        body.fields(("User name", username), ("Enrolment code", enrolment_code),
                    ("Admin server", admin_arg))
        until = f" until {expires:%Y-%m-%d %H:%M} UTC" if expires else ""
        body.para(f"First choose your password with the enrolment code. The code works once "
                  f"and only{until}; if it has expired, ask your administrator for a new one. "
                  f"The password needs at least 12 characters, must not contain your user name "
                  f"or e-mail address, and must not be easy to guess.")
        body.code(f"securifile enrol --admin {admin_arg} --user {username}")
        body.para("or with curl:")
        body.code(f"curl {cacert}-H 'Content-Type: application/json' \\",
                  f"     -d '{{\"username\": \"{username}\", \"code\": \"CODE\", "
                  f"\"password\": \"NEW PASSWORD\"}}' \\",
                  f"     {admin_url}/api/v1/enrol")
    else:
        body.fields(("User name", username), ("Admin server", admin_arg))
        body.para("Your administrator gives you your initial password by other means; change "
                  "it after your first login with: securifile passwd")
    body.para(f"Your account is valid until {valid_until:%Y-%m-%d %H:%M} UTC "
              f"({days} day{'s' if days != 1 else ''} from now). After that date you can no "
              "longer log in; ask your administrator if you need it for longer.")
    body.para("Do not forward this e-mail. Change your password at any time with "
              "'securifile passwd'.")
    body.para("Log in with the command-line client (it asks for your password, creates your "
              "key and certificate and keeps them in your configuration folder):")
    body.code(f"securifile login --admin {admin_arg} --user {username}")
    body.para("Or with curl, which returns a token to send as a bearer header:")
    body.code(f"curl {cacert}-H 'Content-Type: application/json' \\",
              f"     -d '{{\"username\": \"{username}\", \"password\": \"YOUR PASSWORD\"}}' \\",
              f"     {admin_url}/api/v1/login")
    if node_urls:
        body.para("Your files live on these storage servers; any of them will do:")
        body.code(*node_urls)
        body.para("For example, to store and fetch a file with the token:")
        node = node_urls[0].rstrip("/")
        body.code(f"curl {cacert}-H 'Authorization: Bearer TOKEN' \\",
                  f"     -T notes.txt {node}/files/{username}/notes.txt",
                  f"curl {cacert}-H 'Authorization: Bearer TOKEN' \\",
                  f"     -O {node}/files/{username}/notes.txt")
    if cert_note:
        body.para(cert_note)
    elif tls:
        body.para(f"The servers use certificates from {PRODUCT}'s own certificate authority; "
                  "ask your administrator for its certificate (securifile-ca.pem above).")
    return _message(f"Your {PRODUCT} account", username, email, body, sender, now)


def enrolment_email(username, email, enrolment_code, admin_url, enrolment_expires, *,
                    sender=None, now=None):
    """A new enrolment code (an administrator reset the password)."""
    now = utc(now or datetime.datetime.now(datetime.timezone.utc))
    admin_url = ",".join(parse_admin_urls(admin_url))
    body = _Body()
    body.para(f"Hello {username},")
    body.para(f"an administrator has issued a new enrolment code for your {PRODUCT} account. "
              f"It works once and only until {utc(enrolment_expires):%Y-%m-%d %H:%M} UTC; "
              "any older code no longer works.")
    body.fields(("User name", username), ("Enrolment code", enrolment_code),
                ("Admin server", admin_url))
    body.code(f"securifile enrol --admin {admin_url} --user {username}")
    body.para("If you did not ask for this, tell your administrator.")
    return _message(f"Your {PRODUCT} enrolment code", username, email, body, sender, now)


def account_removed_email(username, email, admin_url=None, *, sender=None, now=None):
    """The e-mail to an account's owner when the account has been removed."""
    now = utc(now or datetime.datetime.now(datetime.timezone.utc))
    body = _Body()
    body.para(f"Hello {username},")
    where = f" at {admin_url.rstrip('/')}" if admin_url else ""
    body.para(f"your {PRODUCT} account {username!r}{where} was removed on "
              f"{now:%Y-%m-%d %H:%M} UTC. You can no longer log in with it.")
    body.para("If you think this is a mistake, please contact your administrator.")
    return _message(f"Your {PRODUCT} account has been removed", username, email, body,
                    sender, now)
