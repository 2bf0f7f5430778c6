"""Sealed namespaces: what a removed account leaves behind under its name.

A removed account's files stay on the nodes under its name, sealed: nobody reaches them
through a node or the catalogue, not even a later account that gets the same name (its id
differs from the files' ``owner_uid``), and nobody lists a folder that holds one through a
node. Once ``purge_after`` (``removed_namespace_days``) has passed, the nodes ask for them
(``due_for_purge``) and delete them through their normal delete protocol; the catalogue
hears of each deletion as of any other, and the namespace is marked purged when none is
left (``finish_purges``). The checks cost one indexed lookup for names that never had a
removed account.
"""
from sqlalchemy import and_, exists, or_, select

from securifile.common.times import aware

from .models import File, RemovedAccount, User


def current_uid(s, owner):
    """The id of the account that holds the name now (None: nobody does)."""
    return s.scalar(select(User.uid).where(User.username == owner))


class OwnerStamps:
    """The account ids to stamp on new files of ``owners``, read for all of them at the
    first one asked (once per report, not per file)."""

    def __init__(self, s, owners):
        self.s, self.owners = s, sorted(set(owners))
        self.accounts, self.removed = None, None

    def uid(self, owner, written_at):
        """None (sealed) when nobody holds the name, or when the name had a removed account
        and the file is older than the current one (a late report of the removed account's
        file); the current account's id otherwise."""
        if self.accounts is None:
            self._read()
        account = self.accounts.get(owner)
        if account is None:
            return None
        uid, created = account
        if written_at < created and owner in self.removed:
            return None
        return uid

    def _read(self):
        self.accounts = {r.username: (r.uid, aware(r.created_at)) for r in self.s.execute(
            select(User.username, User.uid, User.created_at)
            .where(User.username.in_(self.owners)))}
        self.removed = set(self.s.scalars(select(RemovedAccount.username).distinct().where(
            RemovedAccount.username.in_(self.owners))))


def has_removed_account(s, owner):
    return s.scalar(select(RemovedAccount.uid).where(RemovedAccount.username == owner)
                    .limit(1)) is not None


def sealed_clause(uid):
    """Rows of ``files`` that do not belong to the account with id ``uid``."""
    if uid is None:
        return File.id.isnot(None)
    return (File.owner_uid.is_(None)) | (File.owner_uid != uid)


def visible_clause(s, owner):
    """A filter for the owner's files that leaves out sealed ones (None: nothing is sealed)."""
    if not has_removed_account(s, owner):
        return None
    uid = current_uid(s, owner)
    return File.id.is_(None) if uid is None else File.owner_uid == uid


def sealed(s, owner, path):
    """Whether ``owner/path`` (a file; a folder ending in '/'; '' the namespace) is or holds
    a sealed file. A file path that names no file is not sealed: it is free to create."""
    if not has_removed_account(s, owner):
        return False
    q = select(File.id).where(File.owner == owner, sealed_clause(current_uid(s, owner)))
    if path and not path.endswith("/"):
        q = q.where(File.path == path)
    elif path:
        q = q.where(File.path >= path, File.path < path[:-1] + "0")
    return s.scalar(q.limit(1)) is not None


def _due(now):
    return and_(RemovedAccount.purge_after <= now, RemovedAccount.purged_at.is_(None))


def _files_of(removed):
    """Rows of ``files`` left by the removed account ``removed`` (an aliased or bound row):
    its own, and those of its name that no account owns (late reports, sealed as well)."""
    return and_(File.owner == removed.username,
                or_(File.owner_uid == removed.uid, File.owner_uid.is_(None)))


def due_for_purge(s, now, limit, after=None):
    """Up to ``limit`` files (owner, path, version) of removed accounts whose grace period
    is over, in (owner, path) order after ``after`` (owner, path): what the nodes delete
    next (no version above that one: a path written again since is somebody else's)."""
    q = (select(File.owner, File.path, File.version)
         .where(exists().where(_due(now), _files_of(RemovedAccount)))
         .order_by(File.owner, File.path).limit(limit))
    if after is not None:
        q = q.where(or_(File.owner > after[0], and_(File.owner == after[0], File.path > after[1])))
    return [{"owner": o, "path": p, "version": v} for o, p, v in s.execute(q).all()]


def finish_purges(s, now):
    """Mark purged the due namespaces with no file left; the (name, id) of each."""
    done = []
    for removed in s.scalars(select(RemovedAccount).where(_due(now))).all():
        if s.scalar(select(File.id).where(_files_of(removed)).limit(1)) is None:
            removed.purged_at = now
            done.append((removed.username, removed.uid))
    return done
