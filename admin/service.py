"""The admin server's logic: accounts, login, certificates, roles, servers, events.

Handlers call these methods; nothing here knows about HTTP requests.
"""
import asyncio
import logging
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, select

from securifile.common.certs import CertificateAuthority, CertLayout
from securifile.common.errors import ApiError, NotFound
from securifile.common.times import aware, iso
from securifile.common.tokens import load_private_key, mint_token

from securifile.common.syslog import SD_RECORD, status_event

from .accounts import Accounts
from .acl import AccessControl, allowed
from .catalog import Catalog
from .coordination import insert_once
from .events import events_page
from .mailer import (
    MailError, Mailer, MailSettings, account_email, account_removed_email, enrolment_email)
from .models import Event
from .namespaces import sealed
from .servers import ServerRegistry
from .witness import Witness

log = logging.getLogger("securifile.admin")
EVENTS_KEPT = 10_000
SD_NAMES = {"username": "user", "operation": "op", "size": "bytes"}


class AdminService:
    def __init__(self, cfg, sessions, node_client=None, syslog=None, clock=None):
        self.cfg = cfg
        self.sessions = sessions
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.layout = CertLayout(cfg.certs_dir)
        self.accounts = Accounts(sessions, self.clock, cfg.bcrypt_rounds,
                                 removed_namespace_days=cfg.removed_namespace_days)
        self.acl = AccessControl(sessions)
        self.servers = ServerRegistry(sessions, self._log_status,
                                      fresh_seconds=max(10.0, 5 * cfg.sample_interval))
        self.catalog = Catalog(sessions, self.servers.on_status)
        self.node_client = node_client
        self.syslog = syslog
        self.receiver_stats = None
        self.builtin_receiver = False  # True: events reach the database through syslog
        self.mailer = Mailer(MailSettings(
            mode=cfg.mail_mode, outbox_dir=cfg.admin_data_dir / "outbox",
            smtp_host=cfg.smtp_host or "localhost", smtp_port=cfg.smtp_port or None,
            security=cfg.smtp_security, username=cfg.smtp_username or None,
            password=cfg.smtp_password or None, sender=cfg.mail_from,
            ca_file=cfg.smtp_ca_file or None))
        self._ca = None
        self._token_key = None
        self.openapi = {}
        self.witness = Witness(sessions)

    # -- audit -----------------------------------------------------------------------------

    def audit(self, kind, message, **fields):
        """An event for the syslog stream and the GUI's panel.

        With the built-in receiver the event reaches the database through syslog, like the
        nodes' events; with an external syslog server it is written here as well.
        """
        if self.syslog is not None:
            # The parameter names the nodes' access events use, which the receiver reads.
            params = {SD_NAMES.get(k, k): str(v) for k, v in fields.items()}
            self.syslog.log(5, kind.upper(), {"admin@32473": params}, message)
        if self.builtin_receiver:
            return
        with self.sessions.begin() as s:
            s.add(Event(at=self.clock(), kind=kind, message=message,
                        server=fields.get("server", "admin"), username=fields.get("username", ""),
                        operation=fields.get("operation", ""), path=fields.get("path", ""),
                        result=fields.get("result", ""), size=int(fields.get("size", 0))))

    def record_event(self, event):
        """An event that arrived through the built-in syslog receiver; stored once per
        record id (a message sent again, to this instance or another, adds nothing)."""
        sd = {}
        for params in (event.get("sd") or {}).values():
            sd.update(params)
        size = str(sd.get("bytes") or "0")
        record_id = ((event.get("sd") or {}).get(SD_RECORD) or {}).get("id")
        row = dict(at=self.clock(), kind=(event.get("msgid") or "log").lower(),
                   server=sd.get("server", event.get("hostname") or ""),
                   username=sd.get("user", ""), operation=sd.get("op", ""),
                   path=sd.get("path", ""), result=sd.get("result", ""),
                   size=int(size) if size.isdigit() else 0, message=event.get("msg") or "",
                   record_id=record_id if record_id and len(record_id) <= 32 else None)
        with self.sessions.begin() as s:
            s.execute(insert_once(s, Event, row, "record_id"))

    def prune_events(self, keep=EVENTS_KEPT):
        with self.sessions.begin() as s:
            newest = s.scalar(select(func.max(Event.id)))
            if newest is not None and newest > keep:
                s.execute(delete(Event).where(Event.id <= newest - keep))

    def recent_events(self, after, limit, user):
        """A page of events (see events_page): every one for administrators."""
        return events_page(self.sessions, after, limit, None if user.admin else user.username)

    def _log_status(self, server, old, new, detail):
        log.warning("server %s: %s -> %s (%s)", server, old, new, detail)
        if self.syslog is not None:
            self.syslog.log_event(status_event("admin", server, old, new, detail))

    def syslog_stats(self):
        out = {}
        if self.syslog is not None:
            out["sender"] = self.syslog.stats()
        if self.receiver_stats is not None:
            out["receiver"] = self.receiver_stats()
        return out

    # -- accounts and login ----------------------------------------------------------------

    @property
    def token_key(self):
        if self._token_key is None:
            self._token_key = load_private_key(self.layout.token_private_key)
        return self._token_key

    @property
    def ca(self):
        if self._ca is None:
            self._ca = CertificateAuthority.load(self.layout.ca_cert, self.layout.ca_key)
        return self._ca

    def login(self, login, password, address):
        user = self.accounts.authenticate(login, password, address)
        token, exp = mint_token(self.token_key, user.username, self.cfg.token_ttl_seconds,
                                admin=user.admin, not_after=aware(user.valid_until).timestamp(),
                                uid=user.uid)
        self.audit("login", f"{user.username} logged in", username=user.username,
                   operation="login", result="ok")
        return {"token": token, "username": user.username, "admin": user.admin,
                "expires_at": iso(datetime.fromtimestamp(exp, timezone.utc)),
                "valid_until": iso(aware(user.valid_until))}

    def logout(self, principal):
        """Revoke the credential the caller used (a token, or a certificate): nodes and this
        server refuse it from now on, although its signature and dates are still good."""
        self.accounts.revoke_credential(principal.uid, principal.credential, principal.expires)
        self.audit("login", f"{principal.name} logged out", username=principal.name,
                   operation="logout", result="ok")

    def sign_csr(self, user, csr_pem, caller=None):
        """A short-lived certificate (``certificate_seconds``, never past the account's end)
        for the caller's key; the client renews it before it runs out.

        A renewal asked for with a certificate (``caller``'s credential) revokes that one:
        one live certificate per chain, so a copy of it dies at the owner's next renewal
        (and a thief's renewal shows, the owner's own certificate being refused)."""
        not_after = min(aware(user.valid_until),
                        self.clock() + timedelta(seconds=self.cfg.certificate_seconds))
        try:
            cert = self.ca.sign_user_csr(csr_pem.encode(), user.username, not_after, user.uid)
        except ValueError as e:
            raise ApiError(f"bad certificate request: {e}", code="bad_csr") from None
        if caller is not None and (caller.credential or "").startswith("cert:"):
            self.accounts.revoke_credential(caller.uid, caller.credential, caller.expires)
        from cryptography.hazmat.primitives import serialization
        self.audit("certificate", f"client certificate issued to {user.username}",
                   username=user.username, operation="certificate", result="ok")
        return {"certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
                "ca": self.layout.ca_cert.read_text(),
                "not_after": iso(cert.not_valid_after_utc)}

    async def create_user(self, username, email, valid_days, password=None, admin=False, by="admin"):
        """Create the account and e-mail its owner an enrolment code (when no password was
        given). The answer carries the code only when the e-mail could not be sent, so that
        the administrator can hand it over another way."""
        try:
            valid_days = float(valid_days)
        except (TypeError, ValueError):
            raise ApiError("valid_days must be a number", code="invalid_validity") from None
        new = await asyncio.to_thread(self.accounts.create, username, email, valid_days,
                                      password, admin)
        user = new.user
        mail = await self._mail(account_email(
            user.username, user.email, new.enrolment_code, self.cfg.admin_url, user.valid_until,
            [s.url for s in self.cfg.servers], enrolment_expires=new.enrolment_expires))
        self.audit("account", f"account {user.username} created by {by}", username=user.username,
                   operation="create_user", result="ok")
        result = {"username": user.username, "email": user.email, "admin": user.admin,
                  "valid_until": iso(user.valid_until), "email_sent": mail is None,
                  "enrolment_expires_at": iso(new.enrolment_expires)}
        if mail is not None:
            result["email_error"] = mail
            if new.enrolment_code:
                result["enrolment_code"] = new.enrolment_code
        return result

    async def reset_enrolment(self, username, by="admin"):
        """A new enrolment code e-mailed to the owner (a forgotten password)."""
        user, code, expires = await asyncio.to_thread(self.accounts.issue_enrolment, username)
        mail = await self._mail(enrolment_email(user.username, user.email, code,
                                                self.cfg.admin_url, expires))
        self.audit("account", f"enrolment code for {username} issued by {by}", username=username,
                   operation="enrolment", result="ok")
        result = {"username": user.username, "email_sent": mail is None,
                  "enrolment_expires_at": iso(expires)}
        if mail is not None:
            result.update(email_error=mail, enrolment_code=code)
        return result

    async def enrol(self, username, code, password):
        user = await asyncio.to_thread(self.accounts.enrol, username, code, password)
        self.audit("account", f"{user.username} set a password with an enrolment code",
                   username=user.username, operation="enrol", result="ok")
        return {"username": user.username}

    async def change_password(self, username, current, new, address):
        await asyncio.to_thread(self.accounts.change_password, username, current, new, address)
        self.audit("account", f"{username} changed the password", username=username,
                   operation="passwd", result="ok")

    async def _mail(self, message):
        """Send; None when it went, the reason when not (the account stands either way)."""
        try:
            await asyncio.to_thread(self.mailer.send, message)
            return None
        except MailError as e:
            log.error("account e-mail to %s failed: %s", message["To"], e)
            return str(e)

    async def remove_user(self, username, by="admin"):
        user = await asyncio.to_thread(self.accounts.remove, username)
        await self._mail(account_removed_email(user.username, user.email, self.cfg.admin_url))
        self.audit("account", f"account {username} removed by {by}", username=username,
                   operation="remove_user", result="ok")

    # -- access ----------------------------------------------------------------------------

    async def grant(self, caller, owner, path, grantee, role):
        await asyncio.to_thread(self.acl.grant, caller, owner, path, grantee, role)
        self.audit("acl", f"{caller} granted {role} on {owner}/{path} to {grantee}",
                   username=caller, operation="grant", path=f"{owner}/{path}", result=role)

    async def revoke(self, caller, owner, path, grantee):
        await asyncio.to_thread(self.acl.revoke, caller, owner, path, grantee)
        self.audit("acl", f"{caller} revoked {grantee} on {owner}/{path}",
                   username=caller, operation="revoke", path=f"{owner}/{path}")

    def decide(self, username, owner, path, uid=None, credential=None):
        """What a node needs to decide a request: the role, and whether the account may act.

        ``uid`` and ``credential`` come from the caller's token or certificate: a credential
        of a removed account (even when a new one has the name now) or a revoked one is
        refused. ``state`` (removed, revoked, disabled, expired) lets the node fail closed
        for that account or credential while this server is unreachable; ``uid`` and
        ``valid_until`` let it honour the account's end offline."""
        user = self.accounts.get(username)
        if user is None:
            return {"user": username, "uid": uid, "active": False, "state": "removed",
                    "reason": "no such account", "role": None}
        problem = self.accounts.credential_problem(user, uid, credential)
        if problem is not None:
            state, reason = problem
            return {"user": username, "uid": uid, "active": False, "state": state,
                    "reason": reason, "role": None}
        try:
            self.accounts.check_active(user)
        except ApiError as e:
            state = "disabled" if e.code == "account_disabled" else "expired"
            return {"user": username, "uid": uid, "active": False, "state": state,
                    "reason": e.message, "role": None}
        with self.sessions() as s:
            closed = sealed(s, owner, path)
        role = None if closed and path and not path.endswith("/") else self.acl.role(
            username, owner, path)
        may = {op: allowed(role, op) for op in ("read", "write", "create", "delete", "list")}
        answer = {"user": username, "uid": uid, "active": True, "role": role, "may": may,
                  "valid_until": aware(user.valid_until).timestamp()}
        if closed:
            # A removed account's files, or a folder holding some: nobody reaches them, and
            # the node must ask for each path in this namespace, not once for all of it.
            may["list"] = False
            answer.update(sealed=True, reason=f"{owner}/{path} holds files of a removed account")
        return answer

    # -- servers ---------------------------------------------------------------------------

    async def set_server_state(self, name, state, by):
        url = await asyncio.to_thread(self.servers.set_admin_state, name, state)
        if self.node_client is None:
            raise ApiError("no node client configured", status=500, code="internal_error")
        await self.node_client.set_state(url, state)
        # 'subject', not 'server': the admin server signs its records as itself.
        self.audit("status", f"{by} took server {name} {state}", username=by, subject=name,
                   operation=state, result="ok")

    def prune_samples(self, keep_days=7):
        """Storage samples and deletions older than a week (no node queues reports so long),
        and revocations of credentials that have expired anyway."""
        self.accounts.prune_revoked()
        self.catalog.prune_tombstones(self.clock() - timedelta(days=keep_days))
        return self.catalog.prune_samples(self.clock() - timedelta(days=keep_days))


__all__ = ["AdminService", "NotFound"]
