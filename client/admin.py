"""A small synchronous JSON client for the admin server's REST API.

It shares the storage client's transport (TLS context, kept-alive connections per thread,
typed errors from the JSON error shape), so the TUI's thread workers can call it as they
call ``Client``, and a ``Client`` built with an admin URL hands out one on its own
connections (``Client.admin``). Every method is one request; errors raise the
``securifile.client.errors`` exceptions (``ServerError`` subclasses carry the server's code
and message), and an admin server that does not answer raises ``AdminUnreachable``.
"""
import json
from urllib.parse import quote, urlencode

from securifile.common.admin_urls import MOVE_ON_STATUSES, AdminURLs, parse_admin_urls

from .errors import NoRunningServer, ProtocolError, TransportError, Unreachable, describe_error
from .files import parse_remote
from .servers import base_url
from .transport import (CHUNK_SIZE, BytesBody, ConnectionsOwner, Transport, error_from_response,
                        tls_context)

RUNNING, UNKNOWN, OFFLINE = "running", "unknown", "offline"
# Rows per page the clients ask for: every page answers in milliseconds at this size (see
# docs/ADMIN-SCALE.md); the next page starts after the last row's key (``after``).
PAGE = 200


class AdminUnreachable(TransportError):
    """The admin server did not answer (refused, reset, timed out)."""

    def __init__(self, url, cause):
        self.url, self.cause = url, cause
        super().__init__(f"cannot reach the admin server at {url}: {describe_error(cause)}")


def acl_target(target):
    """(owner, request path) for a grant target: ``alice/a.txt``, ``alice/docs/`` or ``alice``.

    A folder keeps its trailing '/', as the admin server tells files from folders by it.
    """
    folder = target.endswith("/") or "/" not in target
    fp = parse_remote(target, folder=folder)
    path = fp.full.rstrip("/") + "/" if folder else fp.full
    return fp.owner, "/api/v1/acl/" + quote(path, safe="/")


def usable_servers(listing):
    """(URLs to use, URLs of every server) from a ``GET /api/v1/servers`` answer.

    Only running servers are used, never down, failed or offline ones. Servers the admin
    server has not heard from yet (``unknown``, just after a start) are used only while no
    server is known to run. Raises NoRunningServer when that leaves none.
    """
    servers = [s for s in (listing or {}).get("servers", []) if isinstance(s, dict) and s.get("url")]
    online = [s for s in servers if s.get("admin_state", "online") != OFFLINE]
    usable = [s["url"] for s in online if s.get("status") == RUNNING]
    if not usable:
        usable = [s["url"] for s in online if s.get("status") == UNKNOWN]
    if not usable:
        raise NoRunningServer(servers)
    return usable, [s["url"] for s in servers]


class AdminClient(ConnectionsOwner):
    """Calls the admin server at ``url`` as one user (bearer ``token`` and/or certificate).

    ``url``: one URL, or several admin server instances (a list, or "URL,URL"): each call
    goes to the one that answered last, and to the next when it does not answer or answers
    5xx, each at most once (common/admin_urls.py).

    ``transport``: share another client's connections and TLS context (then ``ca``,
    ``cert``, ``key`` and the timeouts are that transport's). Safe to share between
    threads.
    """

    def __init__(self, url, *, ca=None, cert=None, key=None, token=None, timeout=30.0,
                 connect_timeout=5.0, transport=None):
        self.admin = AdminURLs([base_url(u) for u in parse_admin_urls(url)])
        self._token = token
        if transport is None:
            secure = any(u.startswith("https:") for u in self.admin.urls)
            transport = Transport(tls_context(ca, cert, key) if secure else None,
                                  timeout=timeout, connect_timeout=connect_timeout)
        self._transport = transport

    @classmethod
    def from_settings(cls, settings, **kwargs):
        """From ClientSettings (cluster file or saved login); they must name an admin URL."""
        if not settings.admin_url:
            raise ValueError("these settings name no admin server")
        return cls(settings.admin_url, ca=settings.ca, cert=settings.cert, key=settings.key,
                   token=settings.token, **kwargs)

    @property
    def url(self):
        """The instance that answered last (the first before any answered)."""
        return self.admin.current

    @property
    def urls(self):
        return list(self.admin.urls)

    @property
    def tls(self):
        return self.url.startswith("https:")

    def set_token(self, token):
        self._token = token

    # -- the request --

    def request(self, method, path, payload=None, *, query=None, expected=(200,)):
        """One call: the decoded JSON answer (None for ``204``), or the typed error."""
        if query:
            query = {k: v for k, v in query.items() if v is not None}
        target = path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        if data is not None:
            headers["Content-Type"] = "application/json"
        resp = self._exchange(method, target, headers, data)
        if resp.status not in expected:
            raise error_from_response(resp)
        if resp.status == 204:
            resp.release()
            return None
        return resp.json()

    def _exchange(self, method, target, headers, data):
        """The first answer from the instances in turn; the last instance's 5xx, or
        AdminUnreachable naming the last one when none answers."""
        order = self.admin.order()
        for i, base in enumerate(order):
            body = None if data is None else BytesBody(data, CHUNK_SIZE)
            try:
                resp = self._transport.exchange(method, base + target, headers, body)
            except Unreachable as e:
                if i == len(order) - 1:
                    raise AdminUnreachable(base, e.cause) from e.cause
                continue
            if resp.status in MOVE_ON_STATUSES and i < len(order) - 1:
                resp.release()
                continue
            self.admin.answered(base)
            return resp

    # -- accounts --

    def login(self, username, password):
        """``{"token","expires_at","username","admin","valid_until"}``; the token is kept."""
        result = self.request("POST", "/api/v1/login",
                              {"username": username, "password": password})
        if not isinstance(result, dict) or not result.get("token"):
            raise ProtocolError(f"{self.url} answered a login without a token")
        self._token = result["token"]
        return result

    def enrol(self, username, code, password):
        """Set the password of a new (or reset) account with its e-mailed enrolment code."""
        return self.request("POST", "/api/v1/enrol",
                            {"username": username, "code": code, "password": password})

    def change_password(self, current, new):
        """Change the caller's password (the current one proves it is the owner). Every
        credential issued before dies: the answer is a fresh token (as ``login``'s), which
        this client calls with from now on."""
        result = self.request("POST", "/api/v1/me/password",
                              {"current_password": current, "new_password": new})
        if not isinstance(result, dict) or not result.get("token"):
            raise ProtocolError(f"{self.url} answered a password change without a token")
        self._token = result["token"]
        return result

    def logout(self):
        """Revoke the credential this client calls with (its token, else its certificate)."""
        return self.request("POST", "/api/v1/logout", expected=(204,))

    def me(self):
        """The caller's account: username, email, admin, valid_until."""
        return self.request("GET", "/api/v1/me")

    def sign_csr(self, csr_pem):
        """``{"certificate","ca","not_after"}`` for a PEM certificate request."""
        if isinstance(csr_pem, bytes):
            csr_pem = csr_pem.decode("ascii")
        return self.request("POST", "/api/v1/certificates", {"csr": csr_pem}, expected=(200, 201))

    def find_user(self, username):
        """The account named exactly ``username`` (``{"username", ...}``), or None."""
        found = self.request("GET", "/api/v1/users", query={"username": username})["users"]
        return found[0] if found else None

    def users_page(self, *, limit=PAGE, after=None):
        """One page of accounts by name, after the name ``after`` (a short page is the last)."""
        return self.request("GET", "/api/v1/users", query={"limit": limit, "after": after})["users"]

    def users(self, page_size=PAGE):
        """The accounts the caller may list, with file count and volume, page by page (keyset:
        each page after the last name of the one before; a short page is the last): every
        account for administrators; oneself and the users one shares with for others."""
        users, after = [], None
        while True:
            page = self.users_page(limit=page_size, after=after)
            users += page
            if len(page) < page_size:
                return users
            after = page[-1]["username"]

    def add_user(self, username, email, valid_days, *, password=None, admin=False,
                 quota_bytes=None):
        """Create an account (administrators only). Without ``password`` its owner gets an
        enrolment code by e-mail (in the answer too, when the e-mail could not be sent).
        ``quota_bytes``: what its files may take (None: no limit)."""
        payload = {"username": username, "email": email, "valid_days": valid_days,
                   "admin": bool(admin), "quota_bytes": quota_bytes}
        if password is not None:
            payload["password"] = password
        return self.request("POST", "/api/v1/users", payload, expected=(201,))

    def reset_enrolment(self, username):
        """E-mail ``username`` a new enrolment code (administrators only)."""
        return self.request("POST", f"/api/v1/users/{quote(username, safe='')}/enrolment",
                            expected=(201,))

    def set_quota(self, username, quota_bytes):
        """Set (None: lift) an account's quota; ``{"quota_bytes","used_bytes",...}``."""
        return self.request("PATCH", "/api/v1/users/" + quote(username, safe=""),
                            {"quota_bytes": quota_bytes})

    def remove_user(self, username):
        self.request("DELETE", "/api/v1/users/" + quote(username, safe=""), expected=(204,))

    def user_files(self, username, *, limit=None, after=None):
        """``{"username","file_count","total_bytes","files","next"}``."""
        return self.request("GET", f"/api/v1/users/{quote(username, safe='')}/files",
                            query={"limit": limit, "after": after})

    # -- files and access --

    def files(self, prefix, *, recursive=False, limit=None, after=None):
        """``{"files","folders","next"}`` the caller may see under the folder ``prefix``."""
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        return self.request("GET", "/api/v1/files", query={
            "prefix": prefix, "recursive": "1" if recursive else None, "limit": limit,
            "after": after})

    def shared(self):
        """The grants other users gave the caller: ``[{"owner","path","role"}]``."""
        return self.request("GET", "/api/v1/shared")["shared"]

    def grants(self, target):
        """``{"owner","path","grants": [{"username","role","granted_by"}]}`` on a file or folder."""
        return self.request("GET", acl_target(target)[1])

    def grant(self, target, username, role):
        """Give ``username`` a role (reader, editor, master) on a file or folder."""
        return self.request("PUT", acl_target(target)[1], {"username": username, "role": role})

    def revoke(self, target, username):
        self.request("DELETE", acl_target(target)[1], query={"username": username},
                     expected=(204,))

    def events(self, *, after=None, limit=100):
        """``{"events", "next"}``: the newest ``limit`` audit events, or with ``after`` (an
        event id) the first ``limit`` after it, ``next`` naming the cursor while more follow."""
        page = self.request("GET", "/api/v1/events", query={"after": after, "limit": limit})
        page.setdefault("next", None)  # an admin server from before paging
        return page

    # -- servers --

    def servers(self):
        """``{"replicas","tls","servers": [{"name","url","status","admin_state",...}]}``."""
        return self.request("GET", "/api/v1/servers")

    def storage_servers(self):
        """(URLs to use, URLs of every server): running servers only, see usable_servers."""
        return usable_servers(self.servers())

    def storage(self, name, *, since=None, limit=None):
        """A server's storage samples ``[{"t","used_bytes","available_bytes"}]``."""
        return self.request("GET", f"/api/v1/servers/{quote(name, safe='')}/storage",
                            query={"since": since, "limit": limit})["samples"]

    def server_history(self, name):
        return self.request("GET", f"/api/v1/servers/{quote(name, safe='')}/history")["history"]

    def set_server_state(self, name, state):
        """Take a server ``offline`` or put it back ``online`` (administrators only)."""
        if state not in ("offline", "online"):
            raise ValueError("state is 'offline' or 'online'")
        return self.request("POST", f"/api/v1/servers/{quote(name, safe='')}/{state}")

    def add_server(self, name, url):
        """Add a server to the running cluster (administrators only): the new membership."""
        return self.request("POST", "/api/v1/servers", {"name": name, "url": url},
                            expected=(201,))

    def drain_server(self, name):
        """Start moving every copy off ``name``; nothing new is placed on it."""
        return self.request("POST", f"/api/v1/servers/{quote(name, safe='')}/drain")

    def remove_server(self, name):
        """Take a drained server out of the cluster."""
        return self.request("DELETE", f"/api/v1/servers/{quote(name, safe='')}")

    def status(self):
        """The admin server's own ``/status`` (no authentication needed)."""
        return self.request("GET", "/status")

