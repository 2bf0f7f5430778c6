"""What a user may do with a file: the admin server decides, the node caches and enforces.

Decisions are cached for a few seconds only, so a revoked right or an expired account stops
working everywhere within that time. With the admin server unreachable, owners keep access
to their own files and everything shared fails closed with a message that says why.
"""
import json
import logging
import time
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from securifile.common.errors import Forbidden, Unavailable

READ, WRITE, DELETE, LIST = "read", "write", "delete", "list"
# The weakest role that may do each operation, as the admin server's acl module has it; the
# node only names it in a refusal (the decision itself is the admin's "may").
NEEDS = {READ: "reader", LIST: "reader", WRITE: "editor", DELETE: "owner"}
log = logging.getLogger("securifile.access")


class OwnerOnlyAuthoriser:
    """The owner may do anything in their own namespace; nobody else may do anything there.
    Used when a cluster runs without an admin server."""

    async def role(self, principal, fp):
        return "owner" if principal.name == fp.owner else None

    async def check(self, principal, op, fp):
        role = await self.role(principal, fp)
        if role is None:
            raise Forbidden(f"{principal.name} has no access to {fp.full}")
        return role


class AdminAuthoriser:
    def __init__(self, admin_url, ssl_context=None, headers=None, ttl=3.0, timeout=3.0,
                 clock=time.monotonic):
        self.admin_url = admin_url.rstrip("/")
        self.ssl_context = ssl_context
        self.headers = headers or {}
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self.http = AsyncHTTPClient(force_instance=True)
        self._cache = {}

    async def decision(self, user, target):
        key = (user, target)
        hit = self._cache.get(key)
        if hit is not None and self.clock() - hit[0] < self.ttl:
            return hit[1]
        url = f"{self.admin_url}/api/v1/authorize?user={quote(user)}&path={quote(target)}"
        req = HTTPRequest(url, headers=self.headers, ssl_options=self.ssl_context,
                          connect_timeout=self.timeout, request_timeout=self.timeout)
        resp = await self.http.fetch(req)
        answer = json.loads(resp.body)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (self.clock(), answer)
        return answer

    async def check(self, principal, op, fp):
        target = fp.full if fp.rel else fp.owner + "/"
        if op == LIST and fp.rel:
            target += "/"
        if principal.name == fp.owner:
            # In their own namespace only the account's state matters: one cached decision
            # for the whole namespace, not one admin round trip per new file.
            target = fp.owner + "/"
        try:
            answer = await self.decision(principal.name, target)
        except (HTTPClientError, OSError, ValueError) as e:
            if principal.name == fp.owner:
                log.warning("admin server unreachable (%s): owner %s keeps access", e, fp.owner)
                return "owner"
            raise Unavailable(
                "the admin server cannot be reached to check shared access; only owners can "
                "reach their files until it is back", code="admin_unreachable") from None
        if not answer.get("active"):
            raise Forbidden(f"account {principal.name}: {answer.get('reason')}",
                            code="account_inactive")
        role = answer.get("role")
        allowed = answer.get("may", {}).get(op, False)
        if op == WRITE and role is not None:
            allowed = answer["may"].get("write", False) or answer["may"].get("create", False)
        if not allowed:
            if role is None:
                raise Forbidden(f"{principal.name} has no access to {fp.full}")
            raise Forbidden(f"{principal.name} is {role} of {fp.full}; {op} needs {NEEDS[op]}",
                            code="role_too_weak", role=role)
        return role
