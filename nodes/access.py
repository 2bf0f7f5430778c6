"""What a user may do with a file: the admin server decides, the node caches and enforces.

Decisions are cached for a few seconds only, so a revoked right or an expired account stops
working everywhere within that time. With the admin server unreachable, owners of accounts
in good standing keep access to their own files; everything shared, and every account or
credential the node has seen refused, fails closed with a message that says why.
"""
import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import urlencode

from securifile.common.admin_urls import AdminURLs
from securifile.common.errors import Forbidden, Unavailable
from securifile.common.roles import NEEDS  # named in a refusal; the admin server's "may" decides

from .peerclient import PeerError

READ, WRITE, DELETE, LIST = "read", "write", "delete", "list"
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
    """Asks the admin server (``/api/v1/authorize``) and caches its answers for ``ttl``.

    The questions go through ``client`` (the node's PeerClient), over its kept mutual-TLS
    connections: a new connection per question cost a TLS handshake on both sides.
    ``admin_url``: one URL or a list of admin server instances (see common/admin_urls.py):
    the one that answered last is asked first, the next when it does not answer.

    Every question carries the account id and credential id of the caller's token or
    certificate, so a removed account's credential (even under a name given to somebody
    since) and a logged-out token are refused. What the answers said about an account is
    remembered (in ``state_path`` across restarts): while the admin server is unreachable,
    an account seen removed, disabled or expired, a credential seen revoked, a namespace seen
    sealed and an account past the end it was seen with all fail closed; only the owner of
    an account in good standing keeps access to their own files.
    """

    def __init__(self, admin_url, client, ttl=3.0, timeout=3.0, clock=time.monotonic,
                 wall=time.time, state_path=None):
        self.admin = AdminURLs(admin_url)
        self.client = client
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self.wall = wall
        self._cache = {}
        self.memory = AccountMemory(state_path, wall)

    async def decision(self, principal, target):
        key = (principal.name, principal.uid, principal.credential, principal.generation, target)
        hit = self._cache.get(key)
        if hit is not None and self.clock() - hit[0] < self.ttl:
            return hit[1]
        query = urlencode({"user": principal.name, "path": target, "uid": principal.uid or "",
                           "credential": principal.credential or "",
                           "generation": principal.generation})
        answer = await self.client.call_admin(self.admin, f"/api/v1/authorize?{query}",
                                              timeout=self.timeout)
        self.memory.learn(principal, target, answer)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (self.clock(), answer)
        return answer

    async def check(self, principal, op, fp):
        target = fp.full if fp.rel else fp.owner + "/"
        if op == LIST and fp.rel:
            target += "/"
        own = principal.name == fp.owner
        try:
            if own:
                # In their own namespace only the account's state matters: one cached
                # decision for the whole namespace, not one admin round trip per new file,
                # unless it holds a removed account's sealed files.
                answer = await self.decision(principal, fp.owner + "/")
                if answer.get("active") and answer.get("sealed") and target != fp.owner + "/":
                    answer = await self.decision(principal, target)
            else:
                answer = await self.decision(principal, target)
        except PeerError as e:
            if e.status is not None and e.status < 500:  # it answered, and would not decide
                raise Unavailable(f"the admin server refused to decide (HTTP {e.status}); "
                                  "ask the operator", code="admin_refused") from None
            return self.offline(principal, fp, e)
        if not answer.get("active"):
            raise Forbidden(f"account {principal.name}: {answer.get('reason')}",
                            code="account_inactive")
        role = answer.get("role")
        allowed = answer.get("may", {}).get(op, False)
        if op == WRITE and role is not None:
            allowed = answer["may"].get("write", False) or answer["may"].get("create", False)
        if not allowed:
            if answer.get("sealed"):
                raise Forbidden(answer.get("reason") or f"{fp.full} is sealed", code="sealed")
            if role is None:
                raise Forbidden(f"{principal.name} has no access to {fp.full}")
            raise Forbidden(f"{principal.name} is {role} of {fp.full}; {op} needs {NEEDS[op]}",
                            code="role_too_weak", role=role)
        return role

    def offline(self, principal, fp, error):
        """The decision without the admin server: fail closed for whatever was seen bad."""
        refusal = self.memory.refusal(principal, fp.owner)
        if refusal is not None:
            log.warning("admin server unreachable (%s): %s refused: %s", error, principal.name,
                        refusal)
            raise Forbidden(f"account {principal.name}: {refusal} (the admin server cannot be "
                            "reached to say otherwise)", code="account_inactive")
        if principal.name == fp.owner:
            log.warning("admin server unreachable (%s): owner %s keeps access", error, fp.owner)
            return "owner"
        raise Unavailable(
            "the admin server cannot be reached to check shared access; only owners can "
            "reach their files until it is back", code="admin_unreachable") from None


class AccountMemory:
    """What the admin server's answers said about accounts and credentials, for deciding
    while it is unreachable. Entries are few (one per account or credential refused), and
    kept in ``path`` (JSON, 0600) so that a node restarted without the admin server still
    knows them."""

    def __init__(self, path=None, wall=time.time):
        self.path = Path(path) if path else None
        self.wall = wall
        self.denied = {}  # account id -> reason (removed, disabled, expired)
        self.revoked = {}  # credential id -> its expiry (epoch seconds)
        self.valid_until = {}  # account id -> the end of the account, as last seen
        self.sealed = set()  # names whose namespace holds a removed account's files
        self._load()

    def _load(self):
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            self.denied = dict(data.get("denied", {}))
            self.revoked = {k: float(v) for k, v in data.get("revoked", {}).items()}
            self.valid_until = {k: float(v) for k, v in data.get("valid_until", {}).items()}
            self.sealed = set(data.get("sealed", []))
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.error("cannot read %s (%s): starting with no memory of refused accounts",
                      self.path, e)

    def _save(self):
        if self.path is None:
            return
        now = self.wall()
        self.revoked = {k: v for k, v in self.revoked.items() if v > now}
        data = {"denied": self.denied, "revoked": self.revoked, "valid_until": self.valid_until,
                "sealed": sorted(self.sealed)}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)

    def learn(self, principal, target, answer):
        uid, changed = principal.uid, False
        state = answer.get("state")
        if answer.get("active"):
            if uid and self.denied.pop(uid, None) is not None:
                changed = True
            until = answer.get("valid_until")
            if uid and isinstance(until, (int, float)) and self.valid_until.get(uid) != until:
                self.valid_until[uid], changed = float(until), True
            owner = target.split("/", 1)[0]
            if principal.name == owner and target == owner + "/":
                if bool(answer.get("sealed")) != (owner in self.sealed):
                    (self.sealed.add if answer.get("sealed") else self.sealed.discard)(owner)
                    changed = True
        elif state == "revoked" and principal.credential:
            if principal.credential not in self.revoked:
                self.revoked[principal.credential] = float(principal.expires or self.wall())
                changed = True
        elif state in ("removed", "disabled", "expired") and uid:
            reason = answer.get("reason") or state
            if self.denied.get(uid) != reason:
                self.denied[uid], changed = reason, True
        if changed:
            self._save()

    def refusal(self, principal, owner):
        """Why ``principal`` must be refused without the admin server (None: nothing known)."""
        now = self.wall()
        if not principal.uid:
            return "the credential carries no account id"
        if principal.expires is not None and principal.expires <= now:
            return "the credential has expired"
        if principal.uid in self.denied:
            return self.denied[principal.uid]
        if principal.credential in self.revoked:
            return "the credential was revoked"
        until = self.valid_until.get(principal.uid)
        if until is not None and until <= now:
            return "the account has expired"
        if principal.name == owner and owner in self.sealed:
            return f"{owner}/ holds files of a removed account"
        return None
