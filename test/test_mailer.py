"""Account e-mails: the outbox folder, and SMTP over TLS against a real aiosmtpd on loopback."""
import datetime
import socket
import ssl
import stat
import time
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.hazmat.primitives import serialization

from securifile.admin.mailer import (
    MailError, Mailer, MailSettings, account_email, account_removed_email, is_loopback_host,
)
from securifile.common.certs import CertificateAuthority, write_cert_and_key

NOW = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
ADMIN_URL = "https://127.0.0.1:8440"
NODES = ["https://127.0.0.1:8441", "https://127.0.0.1:8442"]
USER, PASSWORD = "smtp-user", "smtp-password"


def welcome(email="alice@example.com", **kwargs):
    return account_email("alice", email, "Enrol-Code-42", ADMIN_URL,
                         NOW + datetime.timedelta(days=30), NODES, None, now=NOW,
                         enrolment_expires=NOW + datetime.timedelta(days=1), **kwargs)


def plain_text(message):
    return message.get_body(("plain",)).get_content()


def wait_for(predicate, timeout=5.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(interval)


# --- Messages -------------------------------------------------------------------------------

def test_account_email_holds_login_details_and_validity():
    message = welcome()
    assert message["Subject"] == "Your SecuriFile account"
    assert message["To"].addresses[0].addr_spec == "alice@example.com"
    assert message["Date"].datetime == NOW
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith(">")
    text = plain_text(message)
    for expected in ("alice", "Enrol-Code-42", ADMIN_URL, "2025-03-31 12:00 UTC",
                     "30 days", "works once", "until 2025-03-02 12:00 UTC",
                     f"securifile enrol --admin {ADMIN_URL} --user alice",
                     f"{ADMIN_URL}/api/v1/enrol", "securifile passwd",
                     f"securifile login --admin {ADMIN_URL} --user alice",
                     f"{ADMIN_URL}/api/v1/login", NODES[0], NODES[1]):
        assert expected in text
    assert "password:" not in text.lower()  # never a password, only the code
    html = message.get_body(("html",)).get_content()
    assert "Enrol-Code-42" in html and "2025-03-31 12:00 UTC" in html


def test_with_two_admin_instances_the_commands_name_both_and_curl_the_first():
    both = "https://admin-a.example:8440,https://admin-b.example:8440"
    text = plain_text(account_email("alice", "alice@example.com", "Enrol-Code-42", both,
                                    NOW + datetime.timedelta(days=30), NODES, None, now=NOW,
                                    enrolment_expires=NOW + datetime.timedelta(days=1)))
    assert f"securifile enrol --admin {both} --user alice" in text
    assert f"securifile login --admin {both} --user alice" in text
    assert "https://admin-a.example:8440/api/v1/login" in text
    assert "https://admin-b.example:8440/api/v1/login" not in text


def test_an_account_made_with_a_password_gets_no_code_and_no_password():
    message = account_email("bob", "bob@example.com", None, ADMIN_URL,
                            NOW + datetime.timedelta(days=30), NODES, None, now=NOW)
    text = plain_text(message)
    assert "Enrolment code" not in text and "securifile passwd" in text
    assert "by other means" in text


def test_account_email_escapes_html_and_rejects_bad_addresses():
    message = account_email("a<b>", "ab@example.com", "p&w<", ADMIN_URL,
                            NOW + datetime.timedelta(days=1), None, "Trust <our> CA", now=NOW)
    html = message.get_body(("html",)).get_content()
    assert "p&amp;w&lt;" in html and "Trust &lt;our&gt; CA" in html and "<our>" not in html
    assert "Trust <our> CA" in plain_text(message)
    with pytest.raises(ValueError):
        welcome(email="alice@example.com\r\nBcc: eve@example.com")
    with pytest.raises(ValueError):
        welcome(email="no-domain")


def test_validity_in_days_and_utc():
    # A naive datetime (as SQLite returns it) is UTC; an aware one is converted to UTC.
    cet = datetime.timezone(datetime.timedelta(hours=1))
    naive = account_email("bob", "bob@example.com", "pw", ADMIN_URL,
                          datetime.datetime(2026, 3, 1, 12, 0), None, None, now=NOW)
    assert "2026-03-01 12:00 UTC (365 days" in plain_text(naive)
    aware = account_email("bob", "bob@example.com", "pw", ADMIN_URL,
                          datetime.datetime(2025, 3, 2, 13, 0, tzinfo=cet), None, None, now=NOW)
    assert "2025-03-02 12:00 UTC (1 day from now)" in plain_text(aware)


def test_account_removed_email():
    message = account_removed_email("alice", "alice@example.com", ADMIN_URL, now=NOW,
                                    sender="Ops <ops@example.com>")
    assert message["Subject"] == "Your SecuriFile account has been removed"
    assert message["From"].addresses[0].addr_spec == "ops@example.com"
    assert "Message-ID" in message and message["Date"].datetime == NOW
    text = plain_text(message)
    assert "'alice'" in text and "2025-03-01 12:00 UTC" in text and "no longer log in" in text


# --- Settings -------------------------------------------------------------------------------

def test_settings_refuse_plain_smtp_beyond_loopback():
    with pytest.raises(ValueError, match="without TLS to mail.example.com"):
        MailSettings(mode="smtp", smtp_host="mail.example.com", security="none")
    for host in ("localhost", "127.0.0.1", "127.0.0.5", "::1", "[::1]"):
        assert MailSettings(mode="smtp", smtp_host=host, security="none").smtp_port == 25
    assert not is_loopback_host("10.0.0.1") and not is_loopback_host("localhost.example.com")


def test_settings_defaults_and_checks():
    s = MailSettings()
    assert (s.mode, s.security, s.smtp_port, s.sender) == (
        "outbox", "starttls", 587, "SecuriFile <no-reply@localhost>")
    assert MailSettings(security="tls").smtp_port == 465
    assert MailSettings(smtp_port="2525", timeout="3").smtp_port == 2525
    for bad in (dict(mode="pigeon"), dict(security="ssl"), dict(username="u"),
                dict(smtp_port=70000), dict(sender="nobody"), dict(timeout=0)):
        with pytest.raises(ValueError):
            MailSettings(**bad)


# --- Outbox ---------------------------------------------------------------------------------

def test_outbox_writes_a_private_parseable_eml(tmp_path):
    outbox = tmp_path / "outbox"
    mailer = Mailer(MailSettings(outbox_dir=outbox, sender="Ops <ops@example.com>"),
                    clock=NOW.timestamp)
    path = mailer.send(welcome())
    assert path.parent == outbox and path.suffix == ".eml"
    assert path.name.startswith("20250301T120000.000000Z-alice@example.com-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in outbox.iterdir()) == [path.name]  # no temp file left over
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == "ops@example.com"  # filled in by send
    assert parsed["To"].addresses[0].addr_spec == "alice@example.com"
    assert parsed["Date"] and parsed["Message-ID"]
    assert "Enrol-Code-42" in plain_text(parsed) and "30 days" in plain_text(parsed)
    second = mailer.send(welcome())  # same second, same recipient: still a new file
    assert second != path and len(list(outbox.iterdir())) == 2


def test_outbox_failure_is_a_mail_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MailError, match="could not write the message to the outbox"):
        Mailer(MailSettings(outbox_dir=blocker / "outbox")).send(welcome())


def test_message_without_recipient_is_refused(tmp_path):
    message = welcome()
    del message["To"]
    with pytest.raises(MailError, match="no recipient"):
        Mailer(MailSettings(outbox_dir=tmp_path)).send(message)


# --- SMTP against aiosmtpd ------------------------------------------------------------------

class Inbox:
    """An aiosmtpd handler that keeps what it receives."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"

    def message(self, index=0):
        return message_from_bytes(self.envelopes[index].content, policy=policy.default)


class LoopbackController(Controller):
    """A controller on a port the system picks (port 0), so parallel tests never collide."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def check_password(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode()))
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Our CA, a mail server certificate it signed, and one signed by a stranger."""
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create()
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    write_cert_and_key(folder / "mail.pem", folder / "mail.key",
                       *ca.issue_server("mail", role="admin"))
    stranger = CertificateAuthority.create("Somebody Else's CA")
    write_cert_and_key(folder / "rogue.pem", folder / "rogue.key",
                       *stranger.issue_server("mail", role="admin"))
    return folder, ca_file


def server_context(pki, name="mail"):
    folder, _ = pki
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / f"{name}.pem", folder / f"{name}.key")
    return context


@pytest.fixture
def smtp_server(pki):
    """``smtp_server(implicit_tls=False, cert="mail", auth=False)`` -> (controller, inbox)."""
    started = []

    def start(implicit_tls=False, cert="mail", auth=False):
        inbox = Inbox()
        context = server_context(pki, cert)
        kwargs = dict(ssl_context=context) if implicit_tls else dict(
            tls_context=context, require_starttls=True)
        if auth:
            kwargs.update(authenticator=check_password, auth_require_tls=True)
        controller = LoopbackController(inbox, hostname="127.0.0.1", port=0,
                                        ready_timeout=5, **kwargs)
        controller.start()
        started.append(controller)
        return controller, inbox

    yield start
    for controller in started:
        controller.stop()


def smtp_mailer(pki, controller, **settings):
    _, ca_file = pki
    return Mailer(MailSettings(**{**dict(mode="smtp", smtp_host="127.0.0.1",
                                         smtp_port=controller.port, ca_file=ca_file,
                                         timeout=3), **settings}))


def assert_delivered(inbox):
    wait_for(lambda: inbox.envelopes)
    envelope = inbox.envelopes[0]
    assert envelope.rcpt_tos == ["alice@example.com"]
    assert envelope.mail_from == "no-reply@localhost"
    received = inbox.message()
    assert received["Subject"] == "Your SecuriFile account"
    assert "Enrol-Code-42" in plain_text(received)


def test_smtp_starttls(pki, smtp_server):
    controller, inbox = smtp_server()
    assert smtp_mailer(pki, controller, security="starttls").send(welcome()) is None
    assert_delivered(inbox)


def test_smtp_implicit_tls(pki, smtp_server):
    controller, inbox = smtp_server(implicit_tls=True)
    smtp_mailer(pki, controller, security="tls").send(welcome())
    assert_delivered(inbox)


def test_smtp_login(pki, smtp_server):
    controller, inbox = smtp_server(auth=True)
    smtp_mailer(pki, controller, username=USER, password=PASSWORD).send(welcome())
    assert_delivered(inbox)
    wrong = smtp_mailer(pki, controller, username=USER, password="wrong")
    with pytest.raises(MailError, match=f"refused the login of '{USER}'"):
        wrong.send(welcome())
    assert len(inbox.envelopes) == 1


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_smtp_server_with_a_foreign_certificate_is_refused(pki, smtp_server, security):
    controller, inbox = smtp_server(implicit_tls=security == "tls", cert="rogue")
    with pytest.raises(MailError, match="certificate that could not be verified"):
        smtp_mailer(pki, controller, security=security).send(welcome())
    assert inbox.envelopes == []


def test_smtp_server_down_fails_quickly(pki):
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        mailer = Mailer(MailSettings(mode="smtp", smtp_host="127.0.0.1", smtp_port=port,
                                     ca_file=pki[1], timeout=3))
        started = time.monotonic()
        with pytest.raises(MailError, match=f"127.0.0.1:{port}: connection refused"):
            mailer.send(welcome())
    assert time.monotonic() - started < 2


def test_missing_ca_file_is_a_mail_error(pki, smtp_server, tmp_path):
    controller, _ = smtp_server()
    with pytest.raises(MailError, match="CA file"):
        smtp_mailer(pki, controller, ca_file=tmp_path / "absent.pem").send(welcome())


def test_starttls_is_never_skipped(pki, smtp_server):
    controller = LoopbackController(Inbox(), hostname="127.0.0.1", port=0)  # no TLS offered
    controller.start()
    try:
        with pytest.raises(MailError, match="does not offer STARTTLS"):
            smtp_mailer(pki, controller, security="starttls").send(welcome())
        # Clear text is for a mail server on this machine only, and then it works.
        inbox = controller.handler
        smtp_mailer(pki, controller, security="none").send(welcome())
        assert_delivered(inbox)
    finally:
        controller.stop()
