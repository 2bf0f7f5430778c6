"""Access control over the database: a user's role on a file from the owner's grants on it
or its folders, and granting and revoking. The rules themselves are in ``common/roles.py``.
"""
from datetime import datetime, timezone

from sqlalchemy import delete, select

from securifile.common.errors import ApiError, Forbidden, NotFound
from securifile.common.roles import NEEDS, OWNER, ROLES, allowed, covers, strongest

from .coordination import upsert
from .db import reading
from .models import Grant, User


class AccessControl:
    def __init__(self, sessions):
        self.sessions = sessions
        self.reading = reading(sessions)  # for the checks and listings

    def grants_for(self, session, username, owner):
        return session.scalars(select(Grant).where(Grant.grantee == username, Grant.owner == owner)).all()

    def role(self, username, owner, path):
        """The caller's role on ``owner/path`` ('' or a path ending in '/' for a folder)."""
        if username == owner:
            return OWNER
        with self.reading() as s:
            return strongest(g.role for g in self.grants_for(s, username, owner) if covers(g.path, path))

    def role_function(self, username, owner):
        """``Roles`` of one caller in one namespace, with the grants read once: a listing asks
        for every row's role, and a query per row would cost a round trip each."""
        if username == owner:
            return Roles([], owner=True)
        with self.reading() as s:
            return Roles(s.execute(select(Grant.path, Grant.role).where(
                Grant.grantee == username, Grant.owner == owner)).all())

    def check(self, username, op, owner, path):
        role = self.role(username, owner, path)
        if not allowed(role, op):
            what = f"{owner}/{path}"
            if role is None:
                raise Forbidden(f"{username} has no access to {what}")
            raise Forbidden(f"{username} is {role} of {what}; {op} needs {NEEDS[op]}",
                            code="role_too_weak", role=role)
        return role

    def list_grants(self, owner, path):
        with self.reading() as s:
            rows = s.scalars(select(Grant).where(Grant.owner == owner, Grant.path == path)
                             .order_by(Grant.grantee)).all()
            return [{"username": g.grantee, "role": g.role, "granted_by": g.granted_by} for g in rows]

    def grant(self, caller, owner, path, grantee, role):
        if role not in ROLES:
            raise ApiError(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        self.check(caller, "grant", owner, path)
        if grantee == owner:
            raise ApiError("the owner's access cannot be changed", status=403, code="owner_immutable")
        with self.sessions.begin() as s:
            if s.scalar(select(User.id).where(User.username == grantee)) is None:
                raise NotFound(f"no user {grantee}", code="no_such_user")
            # One upsert: the same grant made twice at once (two admin instances, or two
            # requests) must not fail the second on the unique key.
            s.execute(upsert(s, Grant, {
                "owner": owner, "path": path, "grantee": grantee, "role": role,
                "granted_by": caller, "created_at": datetime.now(timezone.utc)},
                ("owner", "path", "grantee"), ("role", "granted_by")))

    def revoke(self, caller, owner, path, grantee):
        # The caller's right first, as in grant(): one without it learns nothing more.
        self.check(caller, "revoke", owner, path)
        if grantee == owner:
            raise ApiError("nobody revokes the owner", status=403, code="owner_immutable")
        with self.sessions.begin() as s:
            gone = s.execute(delete(Grant).where(Grant.owner == owner, Grant.path == path,
                                                 Grant.grantee == grantee)).rowcount
        if not gone:
            raise NotFound(f"{grantee} has no grant on {owner}/{path}", code="no_such_grant")

    def shared_with(self, username):
        with self.reading() as s:
            rows = s.execute(select(Grant.owner, Grant.path, Grant.role)
                             .where(Grant.grantee == username)
                             .order_by(Grant.owner, Grant.path)).all()
        return [{"owner": owner, "path": path, "role": role} for owner, path, role in rows]

    def contacts(self, username):
        """The users ``username`` already shares with, either way: the names a non-administrator
        may see in a user list (anybody else only by exact name)."""
        with self.reading() as s:
            given = s.scalars(select(Grant.grantee).where(Grant.owner == username)).all()
            got = s.scalars(select(Grant.owner).where(Grant.grantee == username)).all()
        return sorted(set(given) | set(got) - {username})


class Roles:
    """A caller's role on any path of one namespace (``roles(path)``), from the grants the
    caller holds there (``paths``), read once per request."""

    def __init__(self, grants, owner=False):
        self.owner = owner
        self.paths = [gpath for gpath, _role in grants]
        # Exact paths in a dict, only folder and namespace grants scanned (the rules of
        # covers()): someone with 200 file grants lists 200 rows without 200 x 200 checks.
        self.exact, self.prefixes = {}, []
        for gpath, role in grants:
            if gpath == "" or gpath.endswith("/"):
                self.prefixes.append((gpath, role))
            else:
                self.exact[gpath] = strongest((self.exact.get(gpath), role))

    def __call__(self, path):
        if self.owner:
            return OWNER
        return strongest([self.exact.get(path), *(role for gpath, role in self.prefixes
                                                  if path.startswith(gpath))])

    def opens_below(self, folder_key):
        """Whether a grant lies at or below the folder ``folder_key`` (the way down to it)."""
        return any(gpath.startswith(folder_key) for gpath in self.paths)
