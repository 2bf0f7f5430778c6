"""HTTP transport of the admin server: each handler parses, calls the logic, maps errors.

``auth`` on each class says who may call: PUBLIC, USER (token or certificate of an active
account), ADMIN (an administrator's), NODE (a node certificate from our CA), MONITOR (a
monitoring certificate or an active administrator's token).
"""
import asyncio
import logging
import re
from datetime import datetime, timezone

import tornado.web
from tornado.log import access_log

from securifile.common.errors import ApiError, Forbidden, NotFound
from securifile.common.paths import check_username, parse_path
from securifile.common.metrics import MetricsHandler
from securifile.common.times import iso
from securifile.common.web import MONITOR, NODE, PUBLIC, USER, ApiHandler, NotFoundHandler

from .metrics import AdminMetrics

ADMIN = "admin"
log = logging.getLogger("securifile.admin")


def split_target(raw, allow_folder=True):
    """'owner/path' (a trailing '/' for a folder; the owner alone for the namespace) ->
    (owner, grant path) where a folder's path ends in '/' and the namespace is ''.

    ``raw`` comes already percent-decoded by Tornado (path and query arguments alike):
    decoding again would make 'a%41.txt' name 'aA.txt'.
    """
    fp = parse_path(raw, allow_folder=allow_folder)
    folder = raw.endswith("/") or fp.rel == ""
    return fp.owner, (fp.rel + "/" if fp.rel and folder else fp.rel)


# RFC 3339 date-time, as the OpenAPI document's ``format: date-time`` says.
RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def parse_time(text):
    """An RFC 3339 time from a query; '+00:00' typed unencoded into curl arrives as ' 00:00'."""
    if text is None:
        return None
    for candidate in (text, "+".join(text.rsplit(" ", 1))):
        if RFC3339.fullmatch(candidate):
            try:
                return datetime.fromisoformat(candidate.upper())
            except ValueError:
                break
    raise ApiError("since must be an RFC 3339 time, e.g. 2026-01-31T12:00:00+00:00",
                   code="bad_argument")


class AdminHandler(ApiHandler):
    auth = USER

    async def prepare(self):
        wanted = self.auth
        if wanted == ADMIN:
            self.auth = USER
        await super().prepare()
        self.auth = wanted
        if self.principal is not None and self.principal.kind == "user":
            user = await asyncio.to_thread(self.admin.accounts.get, self.principal.name)
            if user is None:
                raise Forbidden(f"account {self.principal.name} no longer exists", code="no_such_user")
            await asyncio.to_thread(self.admin.accounts.check_credential, user, self.principal)
            self.admin.accounts.check_active(user)
            self.user = user
            if wanted in (ADMIN, MONITOR) and not user.admin:
                raise Forbidden("administrators only", code="admin_only")

    def arg_int(self, name, default, lo=1, hi=5000):
        try:
            return max(lo, min(hi, int(self.get_query_argument(name, str(default)))))
        except ValueError:
            raise ApiError(f"{name} must be a number", code="bad_argument") from None


class LoginHandler(AdminHandler):
    auth = PUBLIC

    async def post(self):
        body = self.json_body()
        result = await asyncio.to_thread(
            self.admin.login, body.get("username", ""), body.get("password", ""),
            self.request.remote_ip)
        self.send_json(result)


class LogoutHandler(AdminHandler):
    """Revoke the credential of this request (the token, or the client certificate)."""

    async def post(self):
        await asyncio.to_thread(self.admin.logout, self.principal)
        self.set_status(204)
        self.finish()


class MeHandler(AdminHandler):
    def get(self):
        u = self.user
        self.send_json({"username": u.username, "email": u.email, "admin": u.admin,
                        "valid_until": iso(u.valid_until)})


class PasswordHandler(AdminHandler):
    """The caller changes their own password, proving the current one."""

    async def post(self):
        body = self.json_body()
        await self.admin.change_password(self.user.username, body.get("current_password"),
                                         body.get("new_password"), self.request.remote_ip)
        self.set_status(204)
        self.finish()


class EnrolHandler(AdminHandler):
    """The owner of a new (or reset) account sets the password with the e-mailed code."""

    auth = PUBLIC

    async def post(self):
        body = self.json_body()
        self.send_json(await self.admin.enrol(body.get("username"), body.get("code"),
                                              body.get("password")))


class UserEnrolmentHandler(AdminHandler):
    """An administrator e-mails a user a new enrolment code (a forgotten password)."""

    auth = ADMIN

    async def post(self, username):
        self.send_json(await self.admin.reset_enrolment(check_username(username),
                                                        self.user.username), status=201)


class CertificateHandler(AdminHandler):
    async def post(self):
        csr = self.json_body().get("csr")
        if not isinstance(csr, str):
            raise ApiError("send {\"csr\": PEM}", code="bad_csr")
        self.send_json(await asyncio.to_thread(self.admin.sign_csr, self.user, csr,
                                               self.principal), status=201)


class ServersHandler(AdminHandler):
    async def get(self):
        servers = await asyncio.to_thread(self.admin.servers.listing)
        self.send_json({"replicas": self.admin.cfg.replicas, "tls": self.admin.cfg.tls,
                        "servers": servers})


class StorageHandler(AdminHandler):
    async def get(self, name):
        since = parse_time(self.get_query_argument("since", None))
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        samples = await asyncio.to_thread(self.admin.catalog.samples, name, since,
                                          self.arg_int("limit", 2000, hi=20000))
        self.send_json({"server": name, "samples": samples})


class ServerHistoryHandler(AdminHandler):
    async def get(self, name):
        self.send_json({"server": name,
                        "history": await asyncio.to_thread(self.admin.servers.history, name)})


class ServerStateHandler(AdminHandler):
    auth = ADMIN

    async def post(self, name, state):
        await self.admin.set_server_state(name, state, self.user.username)
        self.send_json({"server": name, "admin_state": state})


class UsersHandler(AdminHandler):
    """Administrators list every account. Anybody else sees their own account, the names of
    the users they already share with, and (``?username=NAME``) whether NAME exists: enough
    to share, never the whole directory with its admin flags and usage."""

    async def get(self):
        wanted = self.get_query_argument("username", None, strip=False)
        if wanted is not None:
            check_username(wanted)
        limit = self.arg_int("limit", 1000)
        if self.user.admin:
            users = await asyncio.to_thread(self.admin.catalog.users, limit,
                                            self.get_query_argument("after", None), wanted)
            self.send_json({"users": users})
            return
        if wanted is not None:
            found = await asyncio.to_thread(self.admin.accounts.exists, wanted)
            self.send_json({"users": [{"username": wanted}] if found else []})
            return
        mine = await asyncio.to_thread(self.admin.catalog.users, 1, None, self.user.username)
        names = await asyncio.to_thread(self.admin.acl.contacts, self.user.username)
        after = self.get_query_argument("after", None)
        listed = sorted(mine + [{"username": n} for n in names], key=lambda u: u["username"])
        self.send_json({"users": [u for u in listed if not after or u["username"] > after]})

    async def post(self):
        if not self.user.admin:
            raise Forbidden("administrators only", code="admin_only")
        body = self.json_body()
        valid_days, admin = body.get("valid_days", 365), body.get("admin", False)
        if isinstance(valid_days, bool) or not isinstance(valid_days, (int, float)):
            raise ApiError("valid_days must be a number of days", code="invalid_validity")
        if not isinstance(admin, bool):
            raise ApiError("admin must be true or false", code="bad_argument")
        if not isinstance(body.get("password"), (str, type(None))):
            raise ApiError("password must be a string (or absent: an enrolment code is "
                           "e-mailed)", code="weak_password")
        result = await self.admin.create_user(
            body.get("username"), body.get("email"), valid_days, body.get("password"), admin)
        self.send_json(result, status=201)


class UserHandler(AdminHandler):
    auth = ADMIN

    async def delete(self, username):
        await self.admin.remove_user(check_username(username), self.user.username)
        self.set_status(204)
        self.finish()


class UserFilesHandler(AdminHandler):
    async def get(self, username):
        check_username(username)
        if username != self.user.username and not self.user.admin:
            raise Forbidden("only the owner and administrators see a user's file list")
        if not await asyncio.to_thread(self.admin.accounts.exists, username):
            raise NotFound(f"no user {username}", code="no_such_user")
        self.send_json(await asyncio.to_thread(
            self.admin.catalog.owned_files, username, self.arg_int("limit", 500),
            self.get_query_argument("after", None)))


class FilesHandler(AdminHandler):
    async def get(self):
        prefix = self.get_query_argument("prefix", None, strip=False) or self.user.username + "/"
        owner, path = split_target(prefix)
        folder = path.rstrip("/")
        if path and not path.endswith("/"):
            raise ApiError("prefix must name a folder (end it with '/')", code="bad_prefix")
        caller = self.user.username

        role_of = await asyncio.to_thread(self.admin.acl.role_function, caller, owner)
        if role_of(path) is None and not any(
                g["owner"] == owner and g["path"].startswith(path)
                for g in await asyncio.to_thread(self.admin.acl.shared_with, caller)):
            raise Forbidden(f"{caller} has no access to {owner}/{path}")
        recursive = self.get_query_argument("recursive", "0") in ("1", "true", "yes")
        result = await asyncio.to_thread(
            self.admin.catalog.list_folder, caller, owner, folder, role_of,
            self.arg_int("limit", 500), self.get_query_argument("after", None), recursive)
        self.send_json(result)


class SharedHandler(AdminHandler):
    async def get(self):
        self.send_json({"shared": await asyncio.to_thread(self.admin.acl.shared_with,
                                                          self.user.username)})


class AclHandler(AdminHandler):
    async def get(self, raw):
        owner, path = split_target(raw)
        await asyncio.to_thread(self.admin.acl.check, self.user.username, "read", owner, path)
        grants = await asyncio.to_thread(self.admin.acl.list_grants, owner, path)
        self.send_json({"owner": owner, "path": path, "grants": grants})

    async def put(self, raw):
        owner, path = split_target(raw)
        body = self.json_body()
        grantee = check_username(body.get("username"))
        await self.admin.grant(self.user.username, owner, path, grantee, body.get("role"))
        self.send_json({"owner": owner, "path": path, "username": grantee, "role": body.get("role")})

    async def delete(self, raw):
        owner, path = split_target(raw)
        grantee = check_username(self.get_query_argument("username", "", strip=False))
        await self.admin.revoke(self.user.username, owner, path, grantee)
        self.set_status(204)
        self.finish()


class EventsHandler(AdminHandler):
    async def get(self):
        after = None
        if self.get_query_argument("after", None) is not None:
            after = self.arg_int("after", 0, lo=0, hi=2**62)
        self.send_json(await asyncio.to_thread(self.admin.recent_events, after,
                                               self.arg_int("limit", 100, hi=1000), self.user))


class AuthorizeHandler(AdminHandler):
    """A node asks what role a user has on a path (and whether the account may act at all)."""

    auth = NODE

    async def get(self):
        user = check_username(self.get_query_argument("user", "", strip=False))
        owner, path = split_target(self.get_query_argument("path", "", strip=False))
        uid = self.get_query_argument("uid", None) or None
        credential = self.get_query_argument("credential", None) or None
        self.send_json(await asyncio.to_thread(self.admin.decide, user, owner, path, uid,
                                               credential))


class ReportsHandler(AdminHandler):
    auth = NODE

    async def post(self):
        body = self.json_body()
        reports = body.get("reports", [])
        applied = 0
        for report in reports:
            if report.get("server") != self.principal.name and self.principal.name != "?":
                raise Forbidden("a node reports only for itself", code="wrong_reporter")
            applied += await asyncio.to_thread(self.admin.catalog.apply_report, report)
        self.send_json({"received": len(reports), "applied": applied})


class WitnessHandler(AdminHandler):
    """A node that reaches exactly half of the servers asks for the tie-break lease."""

    auth = NODE

    async def post(self):
        body = self.json_body()
        side = body.get("side")
        if not isinstance(side, list) or not all(isinstance(n, str) for n in side):
            raise ApiError("side must be a list of server names", code="bad_side")
        try:
            lease = float(body.get("lease", 0))
        except (TypeError, ValueError):
            raise ApiError("lease must be a number of seconds", code="bad_lease") from None
        granted, holder = await asyncio.to_thread(self.admin.witness.ask,
                                                  self.principal.name, side, lease)
        self.send_json({"granted": granted, "lease": lease if granted else 0, "side": holder})


class StatusHandler(AdminHandler):
    auth = PUBLIC

    def get(self):
        body = {"name": "admin", "status": "running", "tls": self.admin.cfg.tls,
                "syslog": self.admin.syslog_stats()}
        if not self.admin.cfg.tls:
            body["warning"] = "ENCRYPTION DISABLED: debug mode, never use in production"
        self.send_json(body)


class OpenApiHandler(AdminHandler):
    auth = PUBLIC

    def get(self):
        self.send_json(self.admin.openapi)


class AdminMetricsHandler(AdminHandler, MetricsHandler):
    auth = MONITOR
    scrape_in_thread = True  # the cluster gauges query the database


def log_request(handler):
    status = handler.get_status()
    if status < 400 and handler.request.path in ("/api/v1/reports", "/metrics"):
        return
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(level, "%d %s %.2fms", status, handler._request_summary(),
                   1000.0 * handler.request.request_time())


def make_app(admin, authenticator):
    deps = dict(admin=admin, authenticator=authenticator)
    metrics = AdminMetrics(admin)
    routes = [
        (r"/api/v1/login", LoginHandler),
        (r"/api/v1/logout", LogoutHandler),
        (r"/api/v1/me", MeHandler),
        (r"/api/v1/me/password", PasswordHandler),
        (r"/api/v1/enrol", EnrolHandler),
        (r"/api/v1/certificates", CertificateHandler),
        (r"/api/v1/servers", ServersHandler),
        (r"/api/v1/servers/([^/]+)/storage", StorageHandler),
        (r"/api/v1/servers/([^/]+)/history", ServerHistoryHandler),
        (r"/api/v1/servers/([^/]+)/(offline|online)", ServerStateHandler),
        (r"/api/v1/users", UsersHandler),
        (r"/api/v1/users/([^/]+)", UserHandler),
        (r"/api/v1/users/([^/]+)/files", UserFilesHandler),
        (r"/api/v1/users/([^/]+)/enrolment", UserEnrolmentHandler),
        (r"/api/v1/files", FilesHandler),
        (r"/api/v1/shared", SharedHandler),
        (r"/api/v1/acl/(.+)", AclHandler),
        (r"/api/v1/events", EventsHandler),
        (r"/api/v1/authorize", AuthorizeHandler),
        (r"/api/v1/reports", ReportsHandler),
        (r"/api/v1/witness", WitnessHandler),
        (r"/api/v1/openapi.json", OpenApiHandler),
        (r"/status", StatusHandler),
    ]
    return tornado.web.Application(
        [(pattern, cls, deps) for pattern, cls in routes]
        + [(r"/metrics", AdminMetricsHandler, dict(deps, registry=metrics.registry))],
        default_handler_class=NotFoundHandler, default_handler_args=deps,
        log_function=metrics.requests.counting(log_request))
