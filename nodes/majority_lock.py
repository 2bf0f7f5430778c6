"""The lock a change of a file is made under: taken here and from a majority of the servers,
with a stamp above every stamp they know or reserved (see ``locks``), renewed while the change
runs, given back when it is published or abandoned.

A mixin of ``StorageNode``, which provides ``locks`` (this node's LockTable), ``client`` (the
peer client), ``urls``, ``lock_lease``, ``call_timeout``, ``_voters``, ``_enough``,
``require_serving``, ``apply_locations``, ``_spawn`` and ``refusals`` (a judge's hold on
the writes this node coordinates after its return).
"""
import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from securifile.common.errors import Locked, Unavailable

from .peerclient import PeerError

log = logging.getLogger("securifile.storage")


@dataclass
class Ticket:
    """A file's lock, held on this node and on a majority: what a change is made under."""

    fp: object
    user: str
    token: str
    stamp: int
    granted: list  # the peers that granted it (this node not included)
    existing: object = None  # the file's newest record known to the majority (may be a tombstone)
    renewed: float = field(default_factory=time.monotonic)


def _why_not(peers, results):
    """Which peers did not grant a lock and why, for the operator reading the refusal."""
    def reason(r):
        if not isinstance(r, PeerError):
            return type(r).__name__
        if r.timed_out:
            return "no answer in time"
        if r.unreachable:
            return "unreachable"
        err = r.body.get("error")
        return str((err.get("code") if isinstance(err, dict) else None) or r.status or "failed")
    return ", ".join(f"{p}: {reason(r)}" for p, r in zip(peers, results) if not isinstance(r, dict))


class MajorityLocking:
    """Taking, renewing and giving back a file's majority lock (mixed into StorageNode)."""

    def _known_stamp(self, fp):
        loc = self.locations.get(fp, include_deleted=True)
        return loc.stamp if loc else 0

    async def lock(self, fp, user):
        """Take ``fp``'s lock here and from a majority; a Ticket with the change's stamp.

        Locked (423) if any server holds it for someone else; Unavailable (503) without a
        majority. Newer records that the granting peers hold are applied here first, so the
        ticket's ``existing`` is the newest acknowledged state of the file.
        """
        self.require_serving()
        held = self.refusals.writes_held()
        if held > 0:  # a judge refuses this node's writes a moment longer (nodes/refusals.py)
            await asyncio.sleep(held)
            self.require_serving()
        token = uuid.uuid4().hex
        known = self._known_stamp(fp)
        self.locks.acquire(fp, user, self.name, token, self.lock_lease)
        stamps = [self.locks.reserve(fp, known)]
        peers = self._voters()
        results = await asyncio.gather(
            *(self.client.lock(self.urls[p], fp, user, self.lock_lease, token, known,
                               timeout=self.call_timeout) for p in peers),
            return_exceptions=True)
        granted = [p for p, r in zip(peers, results) if isinstance(r, dict)]
        refused = [r for r in results if isinstance(r, PeerError) and r.status == 423]
        ticket = Ticket(fp, user, token, 0, granted)
        if refused:
            self.release(ticket)
            err = refused[0].body.get("error", {})
            raise Locked(err.get("message", f"{fp.full} is locked elsewhere"),
                         holder=err.get("holder"), node=err.get("node"))
        if not self._enough(1 + len(granted)):
            self.release(ticket)
            raise Unavailable(f"only {1 + len(granted)} of {len(self.peers.names) + 1} servers "
                              f"granted the lock on {fp.full}: no majority "
                              f"({_why_not(peers, results)})", code="no_quorum")
        newer = [r["record"] for r in results if isinstance(r, dict) and r.get("record")]
        if newer:
            self.apply_locations(newer)
        stamps += [int(r.get("stamp", 0)) for r in results if isinstance(r, dict)]
        ticket.stamp = max(stamps)
        ticket.existing = self.locations.get(fp, include_deleted=True)
        if any(s != ticket.stamp for s in stamps):
            # Someone knew a higher stamp: every granting server reserves the chosen one too,
            # so any later majority (which shares a server with this one) goes above it.
            await self.renew(ticket)
        return ticket

    async def renew(self, ticket):
        """Renew the lease on the granting peers (and raise their reservation to the stamp);
        remembers when a majority last confirmed it."""
        fp = ticket.fp
        self.locks.acquire(fp, ticket.user, self.name, ticket.token, self.lock_lease)
        self.locks.raise_reservation(fp, ticket.stamp)
        started = time.monotonic()
        results = await asyncio.gather(
            *(self.client.lock(self.urls[p], fp, ticket.user, self.lock_lease, ticket.token,
                               ticket.stamp - 1, stamp=ticket.stamp, timeout=self.call_timeout)
              for p in ticket.granted), return_exceptions=True)
        if self._enough(1 + sum(isinstance(r, dict) for r in results)):
            ticket.renewed = started

    def check_held(self, ticket):
        """Unavailable unless a majority confirmed the lock recently enough that it cannot
        have run out anywhere: a change is published only under a live lock."""
        if time.monotonic() - ticket.renewed > self.lock_lease * 0.8:
            raise Unavailable(f"the lock on {ticket.fp.full} could not be renewed on a majority",
                              code="no_quorum")

    def release(self, ticket, skip=()):
        """Give the lock back here at once, on the peers in the background."""
        self.locks.release(ticket.fp, ticket.token)
        for p in ticket.granted:
            if p not in skip:
                self._spawn(self._unlock_peer(p, ticket))

    async def _unlock_peer(self, peer, ticket):
        try:
            await self.client.unlock(self.urls[peer], ticket.fp, ticket.token,
                                     timeout=self.call_timeout)
        except PeerError as e:  # its lease runs out, or it drops the lock seeing us down
            log.debug("unlock of %s on %s failed: %s", ticket.fp, peer, e)
