"""The admin server's logic: accounts, login, certificates, roles, servers, events, and
who may see or change what (methods that take a ``Caller`` apply the rule themselves).

Handlers call these methods; nothing here knows about HTTP requests.
"""
import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from securifile.common.certs import CertificateAuthority, CertLayout
from securifile.common.errors import ApiError, Forbidden, NotFound
from securifile.common.times import aware, iso
from securifile.common.tokens import load_private_key, mint_token

from securifile.common.syslog import SD_RECORD, status_event

from .accounts import Accounts
from .acl import AccessControl, allowed
from .caller import Caller
from .catalog import Catalog
from .bulk import dialect_insert, insert_rows
from .coordination import exclusive
from .db import reading
from .events import events_page
from .membership import MembershipBook
from .mailer import (
    MailError, Mailer, MailSettings, account_email, account_removed_email, enrolment_email)
from .models import Event
from .namespaces import due_for_purge, finish_purges, sealed
from .quotas import Quotas, check_quota
from .servers import ServerRegistry
from .shared_throttle import SharedLoginThrottle
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
        # The login back-off in the database: every admin server instance counts one.
        self.accounts = Accounts(sessions, self.clock, cfg.bcrypt_rounds,
                                 throttle=SharedLoginThrottle(sessions),
                                 removed_namespace_days=cfg.removed_namespace_days)
        self.acl = AccessControl(sessions)
        self.servers = ServerRegistry(sessions, self._log_status,
                                      fresh_seconds=max(10.0, 5 * cfg.sample_interval))
        self.catalog = Catalog(sessions, self.servers.on_status)
        self.quotas = Quotas(sessions, self.clock, cfg.quota_reservation_seconds)
        self.catalog.on_quota_done = self.quotas.finish
        self.node_client = node_client
        self.syslog = syslog
        self.receiver_stats = None
        self.builtin_receiver = False  # True: events reach the database through syslog
        self.recorder = None  # the built-in receiver's EventRecorder, which calls record_events
        self.mailer = Mailer(MailSettings(
            mode=cfg.mail_mode, outbox_dir=cfg.admin_data_dir / "outbox",
            smtp_host=cfg.smtp_host or "localhost", smtp_port=cfg.smtp_port or None,
            security=cfg.smtp_security, username=cfg.smtp_username or None,
            password=cfg.smtp_password or None, sender=cfg.mail_from,
            ca_file=cfg.smtp_ca_file or None))
        self._ca = None
        self._token_key = None
        self.witness = Witness(sessions)
        self.membership = MembershipBook(sessions, self.servers, self.witness, cfg.replicas)
        # Node names the admin server accepts certificates of: kept in step with the
        # membership (the Authenticator shares this set).
        self.node_names = set()
        self.syslog_names = {"admin"}  # and the nodes, for the built-in receiver

    @property
    def admin_address(self):
        """Every admin server instance, "URL,URL", as account e-mails name them."""
        return ",".join(self.cfg.admin_endpoints)

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
        """An event that arrived through the built-in syslog receiver (see record_events)."""
        self.record_events([event])

    def record_events(self, events):
        """Events that arrived through the built-in syslog receiver, in one transaction,
        each stored once per record id (a message sent again, to this instance or another,
        adds nothing). A batch the database refuses is stored event by event, so that one
        bad event loses only itself."""
        rows = [self._event_row(e) for e in events]
        try:
            self._insert_events(rows)
        except SQLAlchemyError:
            if len(rows) == 1:
                raise
            for row in rows:
                try:
                    self._insert_events([row])
                except SQLAlchemyError as e:
                    log.error("audit event not stored (%s): %.300r", e, row)

    def _insert_events(self, rows):
        with self.sessions.begin() as s:
            insert_rows(s, dialect_insert(s, Event).on_conflict_do_nothing(
                index_elements=["record_id"]), rows)

    def _event_row(self, event):
        sd = {}
        for params in (event.get("sd") or {}).values():
            sd.update(params)
        size = str(sd.get("bytes") or "0")
        record_id = ((event.get("sd") or {}).get(SD_RECORD) or {}).get("id")
        return dict(at=self.clock(), kind=(event.get("msgid") or "log").lower(),
                    server=sd.get("server", event.get("hostname") or ""),
                    username=sd.get("user", ""), operation=sd.get("op", ""),
                    path=sd.get("path", ""), result=sd.get("result", ""),
                    size=int(size) if size.isdigit() else 0, message=event.get("msg") or "",
                    record_id=record_id if record_id and len(record_id) <= 32 else None)

    def prune_events(self, keep=EVENTS_KEPT):
        with self.sessions.begin() as s:
            newest = s.scalar(select(func.max(Event.id)))
            if newest is not None and newest > keep:
                s.execute(delete(Event).where(Event.id <= newest - keep))

    def recent_events(self, caller, after, limit):
        """A page of events (see events_page): every one for administrators, the caller's
        own for anybody else."""
        return events_page(reading(self.sessions), after, limit, None if caller.admin else caller.name)

    def _log_status(self, server, old, new, detail):
        log.warning("server %s: %s -> %s (%s)", server, old, new, detail)
        if self.syslog is not None:
            self.syslog.log_event(status_event("admin", server, old, new, detail))

    def status(self):
        """The public health answer: running, whether TLS is on, the syslog counters."""
        body = {"name": "admin", "status": "running", "tls": self.cfg.tls,
                "syslog": self.syslog_stats()}
        if not self.cfg.tls:
            body["warning"] = "ENCRYPTION DISABLED: debug mode, never use in production"
        return body

    def syslog_stats(self):
        out = {}
        if self.syslog is not None:
            out["sender"] = self.syslog.stats()
        if self.receiver_stats is not None:
            out["receiver"] = self.receiver_stats()
        return out

    # -- callers -----------------------------------------------------------------------------

    def identify(self, principal):
        """The ``Caller`` behind a user's credential: refused while the account is gone (403),
        the credential revoked or from a removed account of that name (401), or the account
        disabled or expired (403)."""
        user, revoked = self.accounts.caller_account(principal)
        if user is None:
            raise Forbidden(f"account {principal.name} no longer exists", code="no_such_user")
        self.accounts.check_credential(user, principal, revoked)
        self.accounts.check_active(user)
        return Caller(principal, user)

    def me(self, caller):
        """The caller's account, with its quota and usage."""
        u = caller.user
        return {"username": u.username, "email": u.email, "admin": u.admin,
                "valid_until": iso(u.valid_until), **self.quotas.usage(u.username)}

    def list_users(self, caller, limit, after=None, wanted=None):
        """Administrators list every account. Anybody else sees their own account, the names
        of the users they already share with, and (``wanted``) whether that name exists:
        enough to share, never the whole directory with its admin flags and usage."""
        if caller.admin:
            return self.catalog.users(limit, after, wanted)
        if wanted is not None:
            return [{"username": wanted}] if self.accounts.exists(wanted) else []
        mine = self.catalog.users(1, None, caller.name)
        names = self.acl.contacts(caller.name)
        listed = sorted(mine + [{"username": n} for n in names], key=lambda u: u["username"])
        return [u for u in listed if not after or u["username"] > after]

    def user_files(self, caller, username, limit, after=None):
        """A user's files, for that user and administrators; 404 for no such account."""
        caller.require_self_or_admin(
            username, "only the owner and administrators see a user's file list")
        if not self.accounts.exists(username):
            raise NotFound(f"no user {username}", code="no_such_user")
        return self.catalog.owned_files(username, limit, after)

    def list_folder(self, caller, owner, folder_path, limit, after=None, recursive=False):
        """A folder's page for the caller: allowed with any role on the folder, or with a
        grant somewhere below it (the way down to what was shared); entries show the
        caller's role on each."""
        roles = self.acl.role_function(caller.name, owner)
        if roles(folder_path) is None and not roles.opens_below(folder_path):
            raise Forbidden(f"{caller.name} has no access to {owner}/{folder_path}")
        return self.catalog.list_folder(caller.name, owner, folder_path.rstrip("/"), roles,
                                        limit, after, recursive, grant_paths=roles.paths)

    def shared_with(self, caller):
        return self.acl.shared_with(caller.name)

    def grants(self, caller, owner, path):
        """Who holds which role on ``owner/path``, for callers who may read it."""
        self.acl.check(caller.name, "read", owner, path)
        return {"owner": owner, "path": path, "grants": self.acl.list_grants(owner, path)}

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
        self.audit("login", f"{user.username} logged in", username=user.username,
                   operation="login", result="ok")
        return self.session(user)

    def session(self, user):
        """A fresh token for ``user`` and what the client shows about it."""
        token, exp = mint_token(self.token_key, user.username, self.cfg.token_ttl_seconds,
                                admin=user.admin, not_after=aware(user.valid_until).timestamp(),
                                uid=user.uid, generation=user.credential_generation)
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
            cert = self.ca.sign_user_csr(csr_pem.encode(), user.username, not_after, user.uid,
                                         user.credential_generation)
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

    async def create_user(self, username, email, valid_days, password=None, admin=False, by="admin",
                          quota_bytes=None):
        """Create the account and e-mail its owner an enrolment code (when no password was
        given). The answer carries the code only when the e-mail could not be sent, so that
        the administrator can hand it over another way."""
        try:
            valid_days = float(valid_days)
        except (TypeError, ValueError):
            raise ApiError("valid_days must be a number", code="invalid_validity") from None
        new = await asyncio.to_thread(self.accounts.create, username, email, valid_days,
                                      password, admin, check_quota(quota_bytes))
        user = new.user
        mail = await self._mail(account_email(
            user.username, user.email, new.enrolment_code, self.admin_address, user.valid_until,
            [s.url for s in self.cfg.servers], enrolment_expires=new.enrolment_expires))
        self.audit("account", f"account {user.username} created by {by}", username=user.username,
                   operation="create_user", result="ok")
        result = {"username": user.username, "email": user.email, "admin": user.admin,
                  "valid_until": iso(user.valid_until), "quota_bytes": user.quota_bytes,
                  "email_sent": mail is None,
                  "enrolment_expires_at": iso(new.enrolment_expires)}
        if mail is not None:
            result["email_error"] = mail
            if new.enrolment_code:
                result["enrolment_code"] = new.enrolment_code
        return result

    async def add_user(self, caller, username, email, valid_days=365, password=None, admin=False,
                       quota_bytes=None):
        """An administrator creates an account (POST /users): the JSON body's types checked."""
        caller.require_admin()
        if isinstance(valid_days, bool) or not isinstance(valid_days, (int, float)):
            raise ApiError("valid_days must be a number of days", code="invalid_validity")
        if not isinstance(admin, bool):
            raise ApiError("admin must be true or false", code="bad_argument")
        if not isinstance(password, (str, type(None))):
            raise ApiError("password must be a string (or absent: an enrolment code is "
                           "e-mailed)", code="weak_password")
        return await self.create_user(username, email, valid_days, password, admin,
                                      by=caller.name, quota_bytes=quota_bytes)

    async def reset_enrolment(self, username, by="admin"):
        """A new enrolment code e-mailed to the owner (a forgotten password)."""
        user, code, expires = await asyncio.to_thread(self.accounts.issue_enrolment, username)
        mail = await self._mail(enrolment_email(user.username, user.email, code,
                                                self.admin_address, expires))
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
        """Change the password; every credential issued before dies, and the answer is a
        fresh token (as a login's) so the device that made the change stays logged in."""
        user = await asyncio.to_thread(self.accounts.change_password, username, current, new,
                                       address)
        self.audit("account", f"{username} changed the password", username=username,
                   operation="passwd", result="ok")
        return self.session(user)

    async def _mail(self, message):
        """Send; None when it went, the reason when not (the account stands either way)."""
        try:
            await asyncio.to_thread(self.mailer.send, message)
            return None
        except MailError as e:
            log.error("account e-mail to %s failed: %s", message["To"], e)
            return str(e)

    async def set_quota(self, username, quota_bytes, by="admin"):
        """Set or lift (None) an account's quota; the answer has its usage."""
        usage = await asyncio.to_thread(self.quotas.set_quota, username, quota_bytes)
        self.audit("account", f"quota of {username} set to "
                   f"{'none' if quota_bytes is None else f'{quota_bytes} bytes'} by {by}",
                   username=username, operation="set_quota", result="ok")
        return {"username": username, **usage}

    async def remove_user(self, username, by="admin"):
        user = await asyncio.to_thread(self.accounts.remove, username)
        await self._mail(account_removed_email(user.username, user.email, self.admin_address))
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

    def decide(self, username, owner, path, uid=None, credential=None, generation=0):
        """What a node needs to decide a request: the role, and whether the account may act.

        ``uid``, ``credential`` and ``generation`` come from the caller's token or
        certificate: a credential of a removed account (even when a new one has the name
        now), a revoked one, or one issued before the last password change is refused. ``state`` (removed, revoked, disabled, expired) lets the node fail closed
        for that account or credential while this server is unreachable; ``uid`` and
        ``valid_until`` let it honour the account's end offline."""
        user = self.accounts.get(username)
        if user is None:
            return {"user": username, "uid": uid, "active": False, "state": "removed",
                    "reason": "no such account", "role": None}
        problem = self.accounts.credential_problem(user, uid, credential, generation)
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

    # -- purging removed accounts' namespaces ----------------------------------------------

    def due_purges(self, limit, after=None):
        """The next files of removed accounts past their grace period, for the nodes to
        delete (each through the normal delete: lock, tombstone, catalogue report)."""
        with self.sessions() as s:
            return due_for_purge(s, self.clock(), limit, after)

    def finish_purges(self):
        """Mark purged the namespaces whose last file the nodes deleted, in the audit log."""
        with self.sessions.begin() as s:
            exclusive(s, "finish_purges")  # two admin instances: one marks and logs each
            done = finish_purges(s, self.clock())
        for username, uid in done:
            self.audit("account", f"the files of removed account {username} ({uid}) are "
                       "purged", username=username, operation="purge", result="ok")
        return done

    # -- servers and nodes -----------------------------------------------------------------

    def servers_overview(self):
        """Every server's status and storage, with its membership state (and the files left
        on it while it drains), the epoch and whether a majority holds it."""
        servers = self.servers.listing()
        membership = self.membership.status()
        state = {m["name"]: m for m in membership["servers"]}
        for server in servers:
            member = state.get(server["name"], {})
            server["membership"] = member.get("state", "member")
            server["files_left"] = member.get("files_left")
        return {"replicas": self.cfg.replicas, "tls": self.cfg.tls,
                "epoch": membership["epoch"], "committed": membership["committed"],
                "servers": servers}

    def storage_samples(self, name, since, limit):
        return {"server": name, "samples": self.catalog.samples(name, since, limit)}

    def server_history(self, name):
        return {"server": name, "history": self.servers.history(name)}

    def apply_reports(self, reporter, reports):
        """Apply a node's queued reports in order; how many changed the catalogue. A node
        reports only for itself (``reporter`` '?' is a no-TLS node, which names nobody);
        reports before a wrong one stay applied, as they would have been one by one."""
        applied = 0
        for report in reports:
            if report.get("server") != reporter and reporter != "?":
                raise Forbidden("a node reports only for itself", code="wrong_reporter")
            applied += self.catalog.apply_report(report)
        return applied

    def ask_witness(self, node, side, lease, epoch=None):
        """The tie-break lease for a node that reaches exactly half of the servers. Only a
        node at the current membership epoch, once a majority holds it, may win a tie: a
        side counting over an older list might overlap nobody (admin/membership.py)."""
        granted = self.tie_allowed(epoch) and self.witness.ask(node, side, lease)
        if granted:  # a change made by the CLI must see it too
            self.membership.note_lease(self.witness.side, time.time() + self.witness.remaining())
        return {"granted": granted, "lease": lease if granted else 0, "side": self.witness.side}

    async def set_server_state(self, name, state, by):
        url = await asyncio.to_thread(self.servers.set_admin_state, name, state)
        if self.node_client is None:
            raise ApiError("no node client configured", status=500, code="internal_error")
        await self.node_client.set_state(url, state)
        # 'subject', not 'server': the admin server signs its records as itself.
        self.audit("status", f"{by} took server {name} {state}", username=by, subject=name,
                   operation=state, result="ok")

    def refresh_node_names(self):
        """The servers of the membership are the nodes this server talks to."""
        names = self.membership.names()
        self.node_names.intersection_update(names)
        self.node_names.update(names)
        self.syslog_names.intersection_update(names | {"admin"})
        self.syslog_names.update(names)
        return names

    def change_membership(self, action, name, by, url=None):
        """Add, drain or remove a server (admin/membership.py); the new epoch and list."""
        if action == "add":
            result = self.membership.add(name, url)
        elif action == "drain":
            result = self.membership.drain(name)
        else:
            result = self.membership.remove(name)
        self.refresh_node_names()
        self.audit("status", f"{by}: {action} server {name} (membership epoch {result['epoch']})",
                   username=by, subject=name, operation=action, result="ok")
        return result

    def tie_allowed(self, epoch):
        """The witness grants a tie only to a node at the current epoch, once committed."""
        try:
            epoch = int(epoch)
        except (TypeError, ValueError):
            return False
        current, _servers = self.membership.current()
        return epoch == current and self.membership.committed()

    def prune_samples(self, keep_days=7):
        """Storage samples and deletions older than a week (no node queues reports so long),
        and revocations of credentials that have expired anyway."""
        self.accounts.prune_revoked()
        self.catalog.prune_tombstones(self.clock() - timedelta(days=keep_days))
        return self.catalog.prune_samples(self.clock() - timedelta(days=keep_days))


__all__ = ["AdminService", "NotFound"]
