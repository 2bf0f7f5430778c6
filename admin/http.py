"""HTTP transport of the admin server: each handler parses, calls the logic, maps errors.

``auth`` on each class says who may call: PUBLIC, USER (token or certificate of an active
account), ADMIN (an administrator's), NODE (a node certificate from our CA), MONITOR (a
monitoring certificate or an active administrator's token).
"""
import asyncio
import json
import logging
import re
from datetime import datetime

import orjson
import tornado.web

from securifile.common.errors import ApiError
from securifile.common.paths import check_username, parse_path
from securifile.common.metrics import MetricsHandler
from securifile.common.web import (MONITOR, NODE, PUBLIC, USER, ApiHandler, NotFoundHandler,
                                    request_logger)

from .metrics import AdminMetrics

ADMIN = "admin"
RESERVATION_ID = re.compile(r"[0-9a-f]{32}")
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
                return datetime.fromisoformat(candidate.upper())  # the pattern wants a zone
            except ValueError:
                break
    raise ApiError("since must be an RFC 3339 time, e.g. 2026-01-31T12:00:00+00:00",
                   code="bad_argument")


class AdminHandler(ApiHandler):
    """``auth`` as in common/web.py, plus ADMIN: an active administrator's account.
    ``auth_by_method`` overrides ``auth`` for some methods of a route (e.g. POST: ADMIN)."""

    auth = USER
    auth_by_method = {}
    # Methods whose handler identifies the caller with its own work (``as_caller``): one
    # hop to a worker thread per request, not one for the account and another for the page.
    identify_late = ()

    def initialize(self, service, authenticator):
        self.service = service
        self.authenticator = authenticator

    async def prepare(self):
        wanted = self.auth_by_method.get(self.request.method, self.auth)
        # The authenticator knows users; whether one is an administrator is ours to say.
        self.auth = USER if wanted == ADMIN else wanted
        await super().prepare()
        self.auth = wanted
        self.caller = None
        if self.request.method not in self.identify_late and self._user_principal():
            self.caller = await asyncio.to_thread(self._identify)

    def _user_principal(self):
        return self.principal is not None and self.principal.kind == "user"

    def _identify(self):
        caller = self.service.identify(self.principal)
        if self.auth in (ADMIN, MONITOR):
            caller.require_admin()
        return caller

    async def as_caller(self, work):
        """``work(caller)`` in a worker thread, the caller identified first in the same hop
        (for the methods in ``identify_late``); the arguments are read there too, so a
        refused credential is told so before anything about its arguments."""
        def run():
            if self._user_principal():
                self.caller = self._identify()
            return work(self.caller)
        return await asyncio.to_thread(run)

    def send_json(self, payload, status=200):
        """As ApiHandler's, written with orjson: a page of 200 files costs an eighth of the
        standard library's time (compact, the same JSON values)."""
        try:
            body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:  # what orjson refuses (an integer beyond 64 bits): as before
            body = json.dumps(payload).encode()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def arg_int(self, name, default, lo=1, hi=5000):
        try:
            return max(lo, min(hi, int(self.get_query_argument(name, str(default)))))
        except ValueError:
            raise ApiError(f"{name} must be a number", code="bad_argument") from None

    def no_content(self):
        self.set_status(204)
        self.finish()


class LoginHandler(AdminHandler):
    auth = PUBLIC

    async def post(self):
        body = self.json_body()
        self.send_json(await asyncio.to_thread(
            self.service.login, body.get("username", ""), body.get("password", ""),
            self.request.remote_ip))


class LogoutHandler(AdminHandler):
    """Revoke the credential of this request (the token, or the client certificate)."""

    async def post(self):
        await asyncio.to_thread(self.service.logout, self.principal)
        self.no_content()


class MeHandler(AdminHandler):
    identify_late = ("GET",)

    async def get(self):
        self.send_json(await self.as_caller(self.service.me))


class PasswordHandler(AdminHandler):
    """The caller changes their own password, proving the current one; the answer is a fresh
    token, every credential issued before being revoked."""

    async def post(self):
        body = self.json_body()
        self.send_json(await self.service.change_password(
            self.caller.name, body.get("current_password"), body.get("new_password"),
            self.request.remote_ip))


class EnrolHandler(AdminHandler):
    """The owner of a new (or reset) account sets the password with the e-mailed code."""

    auth = PUBLIC

    async def post(self):
        body = self.json_body()
        self.send_json(await self.service.enrol(body.get("username"), body.get("code"),
                                                body.get("password")))


class UserEnrolmentHandler(AdminHandler):
    """An administrator e-mails a user a new enrolment code (a forgotten password)."""

    auth = ADMIN

    async def post(self, username):
        self.send_json(await self.service.reset_enrolment(check_username(username),
                                                          self.caller.name), status=201)


class CertificateHandler(AdminHandler):
    async def post(self):
        csr = self.json_body().get("csr")
        if not isinstance(csr, str):
            raise ApiError("send {\"csr\": PEM}", code="bad_csr")
        self.send_json(await asyncio.to_thread(self.service.sign_csr, self.caller.user, csr,
                                               self.principal), status=201)


class ServersHandler(AdminHandler):
    auth_by_method = {"POST": ADMIN}
    identify_late = ("GET",)

    async def get(self):
        self.send_json(await self.as_caller(lambda _caller: self.service.servers_overview()))

    async def post(self):
        """An administrator adds a server to the running cluster."""
        body = self.json_body()
        self.send_json(await asyncio.to_thread(
            self.service.change_membership, "add", body.get("name"), self.caller.name,
            body.get("url")), status=201)


class ServerDrainHandler(AdminHandler):
    auth = ADMIN

    async def post(self, name):
        self.send_json(await asyncio.to_thread(self.service.change_membership, "drain",
                                               name, self.caller.name))


class ServerHandler(AdminHandler):
    auth = ADMIN

    async def delete(self, name):
        self.send_json(await asyncio.to_thread(self.service.change_membership, "remove",
                                               name, self.caller.name))


class MembershipHandler(AdminHandler):
    """Nodes poll the current membership here, saying which epoch they hold."""

    auth = NODE

    async def get(self):
        known = self.arg_int("known", 0, lo=0, hi=2**31 - 1)
        self.send_json(await asyncio.to_thread(self.service.membership.heard,
                                               self.principal.name, known))


class StorageHandler(AdminHandler):
    identify_late = ("GET",)

    async def get(self, name):
        self.send_json(await self.as_caller(lambda _caller: self.service.storage_samples(
            name, parse_time(self.get_query_argument("since", None)),
            self.arg_int("limit", 2000, hi=20000))))


class ServerHistoryHandler(AdminHandler):
    identify_late = ("GET",)

    async def get(self, name):
        self.send_json(await self.as_caller(lambda _caller: self.service.server_history(name)))


class ServerStateHandler(AdminHandler):
    auth = ADMIN

    async def post(self, name, state):
        await self.service.set_server_state(name, state, self.caller.name)
        self.send_json({"server": name, "admin_state": state})


class UsersHandler(AdminHandler):
    """GET: every account for administrators, a redacted view for anybody else
    (AdminService.list_users). POST: an administrator creates an account."""

    auth_by_method = {"POST": ADMIN}
    identify_late = ("GET",)

    async def get(self):
        self.send_json({"users": await self.as_caller(self.page)})

    def page(self, caller):
        wanted = self.get_query_argument("username", None, strip=False)
        if wanted is not None:
            check_username(wanted)
        return self.service.list_users(caller, self.arg_int("limit", 1000),
                                       self.get_query_argument("after", None), wanted)

    async def post(self):
        body = self.json_body()
        self.send_json(await self.service.add_user(
            self.caller, body.get("username"), body.get("email"), body.get("valid_days", 365),
            body.get("password"), body.get("admin", False), body.get("quota_bytes")), status=201)


class UserHandler(AdminHandler):
    auth = ADMIN

    async def patch(self, username):
        body = self.json_body()
        if set(body) != {"quota_bytes"}:
            raise ApiError("send {\"quota_bytes\": N} (null: no limit)", code="bad_argument")
        self.send_json(await self.service.set_quota(check_username(username), body["quota_bytes"],
                                                    self.caller.name))

    async def delete(self, username):
        await self.service.remove_user(check_username(username), self.caller.name)
        self.no_content()


class UserFilesHandler(AdminHandler):
    identify_late = ("GET",)

    async def get(self, username):
        self.send_json(await self.as_caller(lambda caller: self.service.user_files(
            caller, check_username(username), self.arg_int("limit", 500),
            self.get_query_argument("after", None))))


class FilesHandler(AdminHandler):
    identify_late = ("GET",)

    async def get(self):
        self.send_json(await self.as_caller(self.page))

    def page(self, caller):
        prefix = self.get_query_argument("prefix", None, strip=False) or caller.name + "/"
        owner, path = split_target(prefix)
        if path and not path.endswith("/"):
            raise ApiError("prefix must name a folder (end it with '/')", code="bad_prefix")
        recursive = self.get_query_argument("recursive", "0") in ("1", "true", "yes")
        return self.service.list_folder(caller, owner, path, self.arg_int("limit", 500),
                                        self.get_query_argument("after", None), recursive)


class SharedHandler(AdminHandler):
    identify_late = ("GET",)

    async def get(self):
        self.send_json({"shared": await self.as_caller(self.service.shared_with)})


class AclHandler(AdminHandler):
    identify_late = ("GET",)

    async def get(self, raw):
        self.send_json(await self.as_caller(
            lambda caller: self.service.grants(caller, *split_target(raw))))

    async def put(self, raw):
        owner, path = split_target(raw)
        body = self.json_body()
        grantee = check_username(body.get("username"))
        await self.service.grant(self.caller.name, owner, path, grantee, body.get("role"))
        self.send_json({"owner": owner, "path": path, "username": grantee,
                        "role": body.get("role")})

    async def delete(self, raw):
        owner, path = split_target(raw)
        grantee = check_username(self.get_query_argument("username", "", strip=False))
        await self.service.revoke(self.caller.name, owner, path, grantee)
        self.no_content()


class EventsHandler(AdminHandler):
    identify_late = ("GET",)

    async def get(self):
        self.send_json(await self.as_caller(self.page))

    def page(self, caller):
        after = None
        if self.get_query_argument("after", None) is not None:
            after = self.arg_int("after", 0, lo=0, hi=2**62)
        return self.service.recent_events(caller, after, self.arg_int("limit", 100, hi=1000))


class AuthorizeHandler(AdminHandler):
    """A node asks what role a user has on a path (and whether the account may act at all)."""

    auth = NODE

    async def get(self):
        user = check_username(self.get_query_argument("user", "", strip=False))
        owner, path = split_target(self.get_query_argument("path", "", strip=False))
        uid = self.get_query_argument("uid", None) or None
        credential = self.get_query_argument("credential", None) or None
        try:
            generation = int(self.get_query_argument("generation", "0") or 0)
        except ValueError:
            raise ApiError("generation must be a whole number", code="bad_argument") from None
        self.send_json(await asyncio.to_thread(self.service.decide, user, owner, path, uid,
                                               credential, generation))


class PurgesHandler(AdminHandler):
    """A node asks which files of removed accounts are past their grace period."""

    auth = NODE

    async def get(self):
        after = self.get_query_argument("after", None, strip=False)
        if after is not None:
            fp = parse_path(after)
            after = (fp.owner, fp.rel)
        files = await asyncio.to_thread(self.service.due_purges, self.arg_int("limit", 100),
                                        after)
        self.send_json({"files": files})


class ReservationHandler(AdminHandler):
    """A node reserves room in an owner's quota for an upload it is about to accept (PUT:
    create, move or renew), or gives the room back (DELETE)."""

    auth = NODE

    async def prepare(self):
        await super().prepare()
        if not RESERVATION_ID.fullmatch(self.path_args[0]):
            raise ApiError("a reservation id is 32 hex digits", code="bad_argument")

    async def put(self, rid):
        body = self.json_body()
        owner, path = check_username(body.get("owner")), body.get("path")
        if not isinstance(path, str):
            raise ApiError("path must be the file's path in the owner's namespace",
                           code="invalid_path")
        fp = parse_path(f"{owner}/{path}")
        size, wanted = body.get("bytes"), body.get("wanted", body.get("bytes"))
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 63
                   for v in (size, wanted)):
            raise ApiError("bytes and wanted must be whole numbers of bytes", code="bad_argument")
        self.send_json(await asyncio.to_thread(self.service.quotas.reserve, self.principal.name,
                                               rid, owner, fp.rel, size, wanted))

    async def delete(self, rid):
        await asyncio.to_thread(self.service.quotas.release, self.principal.name, rid)
        self.no_content()


class ReportsHandler(AdminHandler):
    auth = NODE

    async def post(self):
        reports = self.json_body().get("reports", [])
        applied = await asyncio.to_thread(self.service.apply_reports, self.principal.name,
                                          reports)
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
        self.send_json(await asyncio.to_thread(self.service.ask_witness, self.principal.name,
                                               side, lease, body.get("epoch")))


class StatusHandler(AdminHandler):
    auth = PUBLIC

    def get(self):
        self.send_json(self.service.status())


class OpenApiHandler(AdminHandler):
    auth = PUBLIC

    def initialize(self, service, authenticator, document):
        super().initialize(service, authenticator)
        self.document = document

    def get(self):
        self.send_json(self.document)


class AdminMetricsHandler(AdminHandler, MetricsHandler):
    auth = MONITOR
    scrape_in_thread = True  # the cluster gauges query the database

    def initialize(self, service, authenticator, registry):
        super().initialize(service, authenticator)
        self.registry = registry


class UnknownRouteHandler(NotFoundHandler, AdminHandler):
    """404 ``no_endpoint`` for any path no route matches (dependencies as every handler's)."""


def make_app(service, authenticator, openapi=None):
    """The admin server's routes over ``service``; ``openapi`` is the document it serves."""
    deps = dict(service=service, authenticator=authenticator)
    metrics = AdminMetrics(service)
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
        (r"/api/v1/servers/([^/]+)/drain", ServerDrainHandler),
        (r"/api/v1/servers/([^/]+)", ServerHandler),
        (r"/api/v1/membership", MembershipHandler),
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
        (r"/api/v1/quota/reservations/([^/]+)", ReservationHandler),
        (r"/api/v1/purges", PurgesHandler),
        (r"/api/v1/witness", WitnessHandler),
        (r"/status", StatusHandler),
    ]
    return tornado.web.Application(
        [(pattern, cls, deps) for pattern, cls in routes]
        + [(r"/api/v1/openapi.json", OpenApiHandler, dict(deps, document=openapi or {})),
           (r"/metrics", AdminMetricsHandler, dict(deps, registry=metrics.registry))],
        default_handler_class=UnknownRouteHandler, default_handler_args=deps,
        log_function=metrics.requests.counting(request_logger(("/api/v1/reports", "/metrics"))))
