"""The cluster's membership: which servers vote, numbered by epoch, changed one at a time.

The admin database is the authority. Each change (a server added, set draining, removed)
writes the next epoch's list. Nodes poll it, gossip it in heartbeats and count their
majority over the newest list they hold. A change is refused while the previous one is not
yet known to a majority of its own list (then any majority of the list before and of the
list after share a server, as in Raft's single-server changes), and while the tie-break
witness has a lease out (a side granted exactly half under the old list must have stopped
before the list changes). See docs/DESIGN.md "Changing the membership".
"""
import json
import re
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from securifile.common.errors import ApiError, Conflict, NotFound

from .coordination import upsert
from .db import reading
from .models import File, Membership, Observation, Placement, Server, WitnessLease

MEMBER, DRAINING = "member", "draining"
LEASE_NOTE_SECONDS = 1.0  # a renewed lease is written down at most this often
SERVER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RESERVED_NAMES = {"admin"}


class MembershipBook:
    def __init__(self, sessions, registry, witness, replicas):
        self.sessions = sessions
        self.registry = registry  # ServerRegistry: a row per member for statuses and samples
        self.witness = witness
        self.replicas = replicas
        self._noted = (None, 0.0)  # the side and end last written down

    # -- reading ---------------------------------------------------------------------------

    def bootstrap(self, entries):
        """Epoch 1 from the configuration, the first time; the database wins afterwards."""
        with self.sessions.begin() as s:
            if s.scalar(select(func.max(Membership.epoch))) is None:
                servers = [{"name": e.name, "url": e.url, "state": MEMBER} for e in entries]
                s.add(Membership(epoch=1, servers=json.dumps(servers), change="bootstrap",
                                 at=datetime.now(timezone.utc)))
        epoch, servers = self.current()
        self.registry.register([_Entry(x["name"], x["url"]) for x in servers])
        return epoch, servers

    def _current(self, s):
        row = s.scalars(select(Membership).order_by(Membership.epoch.desc()).limit(1)).first()
        return (row.epoch, json.loads(row.servers)) if row else (0, [])

    def current(self):
        with self.sessions() as s:
            return self._current(s)

    def names(self):
        """The servers of the current list and of the one before: a server just removed is
        still answered, so that its poll tells it it was removed."""
        with self.sessions() as s:
            rows = s.scalars(select(Membership).order_by(Membership.epoch.desc()).limit(2)).all()
        return {x["name"] for row in rows for x in json.loads(row.servers)}

    def heard(self, name, epoch):
        """``name`` holds ``epoch`` (its poll said so); the current list, for it to adopt."""
        with self.sessions.begin() as s:
            row = s.get(Server, name)
            if row is not None and epoch > (row.known_epoch or 0):
                row.known_epoch = epoch
            current, servers = self._current(s)
        return {"epoch": current, "servers": servers}

    def _known_by(self, s, epoch, servers):
        names = [x["name"] for x in servers]
        if not names:
            return 0
        return s.scalar(select(func.count()).select_from(Server).where(
            Server.name.in_(names), Server.known_epoch >= epoch)) or 0

    def committed(self, s=None):
        """Whether a majority of the current list holds the current epoch."""
        if s is None:
            with self.sessions() as s:
                return self.committed(s)
        epoch, servers = self._current(s)
        return 2 * self._known_by(s, epoch, servers) > len(servers)

    def files_left(self, s, name):
        """Files whose catalogue record still names ``name`` a holder (origin or replica)."""
        as_origin = s.scalar(select(func.count()).select_from(File).where(File.origin == name))
        as_replica = s.scalar(select(func.count()).select_from(Placement)
                              .where(Placement.server == name))
        return (as_origin or 0) + (as_replica or 0)

    def status(self):
        """The current list with each server's state, the epoch it holds and files left on
        a draining one: what `server list`, REST and the TUI show."""
        with reading(self.sessions)() as s:
            epoch, servers = self._current(s)
            known = dict(s.execute(select(Server.name, Server.known_epoch)).all())
            # As committed() counts, from the rows just read.
            holding = sum(1 for x in servers if (known.get(x["name"]) or 0) >= epoch)
            committed = 2 * holding > len(servers)
            members = [{**x, "known_epoch": known.get(x["name"], 0) or 0,
                        "files_left": self.files_left(s, x["name"])
                        if x["state"] == DRAINING else None} for x in servers]
        return {"epoch": epoch, "committed": committed, "servers": members}

    def note_lease(self, side, until):
        """The witness granted ``side`` a lease to ``until`` (Unix time): written down (a
        renewal at most every LEASE_NOTE_SECONDS) for changes made by other processes."""
        side = json.dumps(sorted(side))
        if self._noted[0] == side and 0 <= until - self._noted[1] < LEASE_NOTE_SECONDS:
            return
        with self.sessions.begin() as s:
            # Two writers at once (two admin instances, or two grants on one) each read no
            # row and inserted one, and the second failed: one upsert instead.
            s.execute(upsert(s, WitnessLease, {"id": 1, "side": side, "until": until},
                             ("id",), ("side", "until")))
        self._noted = (side, until)

    def _lease_out(self, s):
        """A lease granted here, or written down by the admin server (late by at most
        LEASE_NOTE_SECONDS), that has not run out."""
        if self.witness.lease_live():
            return True
        row = s.get(WitnessLease, 1)
        return row is not None and row.until + LEASE_NOTE_SECONDS > time.time()

    # -- changing --------------------------------------------------------------------------

    def _change(self, describe, mutate):
        """Write the next epoch: ``mutate(session, servers)`` returns the new list or raises.
        Two changes at once both read the same epoch: the second to commit finds its epoch
        taken (the key) and is refused, as any change is until the last is known."""
        try:
            return self._write_change(describe, mutate)
        except IntegrityError:
            raise Conflict("another membership change was made at the same moment; look at "
                           "the servers again and retry", code="membership_changing") from None

    def _write_change(self, describe, mutate):
        with self.sessions.begin() as s:
            epoch, servers = self._current(s)
            if not 2 * self._known_by(s, epoch, servers) > len(servers):
                raise Conflict(f"membership epoch {epoch} is not yet known to a majority of "
                               "its servers; try again when it is", code="membership_changing")
            if self._lease_out(s):
                raise Conflict("a tie-break lease is out (the cluster is split in two halves); "
                               "try again when it has run out", code="witness_lease")
            new = mutate(s, [dict(x) for x in servers])
            s.add(Membership(epoch=epoch + 1, servers=json.dumps(new), change=describe,
                             at=datetime.now(timezone.utc)))
        return {"epoch": epoch + 1, "servers": new}

    def add(self, name, url):
        if not isinstance(name, str) or not SERVER_NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise ApiError("a server name is a lower-case letter, then up to 31 letters, digits, "
                           "'-' or '_' (not 'admin')", code="bad_server_name")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.path not in ("", "/") or not _port(parts):
            raise ApiError("url must be http(s)://HOST:PORT", code="bad_server_url")

        def mutate(s, servers):
            if any(x["name"] == name for x in servers):
                raise Conflict(f"{name} is already a server", code="server_exists")
            if any(x["url"].rstrip("/") == url.rstrip("/") for x in servers):
                raise Conflict(f"{url} is already {name}'s address", code="server_exists")
            row = s.get(Server, name)
            now = datetime.now(timezone.utc)
            if row is None:
                s.add(Server(name=name, url=url, status="unknown", since=now,
                             admin_state="online", used_bytes=0, available_bytes=0,
                             known_epoch=0))
            else:
                row.url, row.known_epoch = url, 0
            return servers + [{"name": name, "url": url, "state": MEMBER}]

        return self._change(f"add {name}", mutate)

    def drain(self, name):
        def mutate(s, servers):
            entry = _find(servers, name)
            if entry["state"] == DRAINING:
                raise Conflict(f"{name} is already draining", code="already_draining")
            staying = [x for x in servers if x["state"] == MEMBER and x["name"] != name]
            if len(staying) < self.replicas + 1:
                raise Conflict(f"draining {name} would leave {len(staying)} servers to hold "
                               f"{self.replicas + 1} copies of each file", code="too_few_servers")
            entry["state"] = DRAINING
            return servers

        return self._change(f"drain {name}", mutate)

    def remove(self, name):
        def mutate(s, servers):
            entry = _find(servers, name)
            if entry["state"] != DRAINING:
                raise Conflict(f"drain {name} first (server drain {name})", code="not_drained")
            left = self.files_left(s, name)
            if left:
                raise Conflict(f"{name} still holds {left} file copies; its drain is not over",
                               code="not_drained", files_left=left)
            s.query(Observation).filter((Observation.observer == name)
                                        | (Observation.subject == name)).delete()
            row = s.get(Server, name)
            if row is not None:
                s.delete(row)
            return [x for x in servers if x["name"] != name]

        return self._change(f"remove {name}", mutate)


class _Entry:
    def __init__(self, name, url):
        self.name, self.url = name, url


def _find(servers, name):
    for x in servers:
        if x["name"] == name:
            return x
    raise NotFound(f"no server {name}", code="no_such_server")


def _port(parts):
    try:
        return parts.port
    except ValueError:
        return None
