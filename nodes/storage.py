"""The storage logic of one node: where a request goes, how a file is placed and copied.

No HTTP here: handlers call these methods and turn the domain errors into status codes.
"""
import asyncio
import logging
import time

import uuid

from securifile.common.errors import Conflict, Locked, NotFound, Unavailable
from securifile.common.syslog import access_event

from .challenge import stat_key
from .locationmap import Location, Replica
from .locks import LockTable
from .peerclient import PeerError
from .peers import DOWN, OFFLINE, RUNNING, VERIFYING
from .placement import place_replicas, serving_holder

log = logging.getLogger("securifile.storage")


class StorageNode:
    def __init__(self, name, urls, replicas, algorithm, store, locations, peers, peer_client, rng,
                 lock_lease=30.0):
        self.name = name
        self.urls = urls
        self.replicas = replicas
        self.algorithm = algorithm
        self.store = store
        self.locations = locations
        self.peers = peers
        self.client = peer_client
        self.rng = rng
        self.locks = LockTable()
        self.lock_lease = lock_lease
        self.pulled_by = {}  # peer -> the last of this node's sequence numbers it has pulled
        # Told of every change this node coordinated: (location, under_replicated).
        self.on_file_change = lambda loc, under_replicated: None
        self.audit = None  # a SyslogSender for the audit log, when one is configured
        self.quarantined = 0  # bad copies moved aside since start

    def log_access(self, user, op, path, result, size=None):
        """One line in the audit log for a user's file access; never fails the request."""
        if self.audit is not None:
            self.audit.log_event(access_event(user, op, path, self.name, result, size))

    # -- routing ---------------------------------------------------------------------------

    def _can_serve(self, loc, name):
        if name in loc.stale:
            return False
        if name != self.name:
            return self.peers.is_running(name)
        return self.peers.is_running(name) and self.locations.copy_version(loc.file_path) == loc.version

    def route_read(self, fp, sent_here=False):
        """('serve', loc) when this node answers, ('redirect', name) of the holder to ask.

        ``sent_here`` says another node already chose this one (the redirect named it): a
        holder with a current copy then serves, even if its own view of the holders ahead
        of it lags behind the redirecting node's.
        """
        loc = self.locations.get(fp)
        if loc is None:
            raise NotFound(f"no file {fp}")
        if sent_here and self.name in loc.holders and self._can_serve(loc, self.name):
            return "serve", loc
        target = serving_holder(loc, lambda n: self._can_serve(loc, n))
        if target is None:
            raise Unavailable(
                f"no server holding {fp} is running (holders: {', '.join(loc.holders)})",
                code="no_holder_running", file=fp.full)
        if target == self.name:
            return "serve", loc
        return "redirect", target

    def route_write(self, fp, sent_here=False):
        """For a PUT: ('local', existing loc or None) or ('redirect', name of the coordinator)."""
        loc = self.locations.get(fp)
        if loc is None:
            anc = self.locations.file_ancestor(fp)
            if anc is not None:
                raise Conflict(f"{anc} is a file, so {fp} cannot be created under it",
                               code="parent_is_a_file")
            if self.locations.has_folder(fp):
                raise Conflict(f"{fp} is a folder", code="is_a_folder")
            return "local", None
        kind, where = self.route_read(fp, sent_here)
        return ("local", loc) if kind == "serve" else (kind, where)

    # -- writes ----------------------------------------------------------------------------

    async def finish_upload(self, fp, existing, digest, size, unlock=None):
        """After the local commit: copy to replicas, publish the location, return it.

        ``unlock`` (a coroutine function) gives the lock back once every node has the record.
        """
        now = time.time()
        if existing is None:
            # A name that was deleted before starts above its tombstone's version.
            prior = self.locations.get(fp, include_deleted=True)
            version = prior.version + 1 if prior else 1
            loc = Location(fp.owner, fp.rel, self.name, digest, self.algorithm, size, version, [], now)
            wanted = place_replicas(self.peers.running_peers(), self.replicas, self.rng)
        else:
            loc = Location(fp.owner, fp.rel, existing.origin, digest, self.algorithm, size,
                           existing.version + 1, [], now)
            wanted = [h for h in existing.holders if h != self.name and self.peers.is_running(h)]
        self.record_copy(fp, loc.version, digest, size)
        confirmed = await self._replicate(fp, loc, wanted, fresh=existing is None)
        if existing is None:
            loc.origin = self.name
            loc.replicas = [Replica(s, i) for i, s in enumerate(confirmed, start=1)]
        else:
            # Holders keep their places; those that missed this version are stale until a
            # running holder brings them up to date (when they come back and are challenged).
            loc.replicas = list(existing.replicas)
            current = set(confirmed) | {self.name}
            loc.stale = [h for h in existing.holders if h not in current]
        self.locations.apply(loc)
        self.on_file_change(loc, len(loc.current_holders) - 1 < self.replicas)
        # Every node learns the new record before the lock goes: a writer elsewhere in
        # between would otherwise take the file for new and lose this version.
        await self.broadcast([loc])
        if unlock is not None:
            await unlock()
        return loc

    async def _replicate(self, fp, loc, wanted, fresh):
        """Copy to each wanted server concurrently; a fresh file replaces a failed target."""
        disk_path = self.store.path_for(fp)
        tried = set(wanted) | {self.name}
        confirmed = {}

        async def copy_to(target, slot):
            while True:
                try:
                    await self.client.send_copy(self.urls[target], fp, disk_path, loc)
                    confirmed[slot] = target
                    return
                except PeerError as e:
                    log.warning("replica copy of %s to %s failed: %s", fp, target, e)
                if not fresh:
                    return
                spare = [p for p in self.peers.running_peers() if p not in tried]
                if not spare:
                    return
                target = place_replicas(spare, 1, self.rng)[0]
                tried.add(target)

        await asyncio.gather(*(copy_to(t, i) for i, t in enumerate(wanted)))
        return [confirmed[i] for i in sorted(confirmed)]

    def record_copy(self, fp, version, digest, size):
        """Note the copy just committed, with the stat key that lets challenges reuse its digest."""
        self.locations.record_copy(fp, version, digest, size, stat_key(self.store.path_for(fp)))

    async def mark_fresh(self, peer, locs):
        """``peer`` now holds the current version of each of ``locs``: publish that."""
        changed = []
        for loc in locs:
            if peer in loc.stale:
                loc.stale = [h for h in loc.stale if h != peer]
                loc.modified = max(time.time(), loc.modified + 1e-6)
                self.locations.apply(loc)
                self.on_file_change(loc, len(loc.current_holders) - 1 < self.replicas)
                changed.append(loc)
        if changed:
            await self.broadcast(changed)

    # -- locks -----------------------------------------------------------------------------

    async def lock_everywhere(self, fp, user):
        """Lock ``fp`` here and on every running peer; Locked (423) if anyone holds it.

        Returns the lock's token. A peer that does not answer is down and cannot take
        writes; one that says the file is locked wins, and what was taken is given back.
        """
        token = uuid.uuid4().hex
        self.locks.acquire(fp, user, self.name, token, self.lock_lease)
        peers = self.peers.running_peers()
        results = await asyncio.gather(
            *(self.client.lock(self.urls[p], fp, user, self.lock_lease, token) for p in peers),
            return_exceptions=True)
        refused = [r for r in results if isinstance(r, PeerError) and r.status == 423]
        if refused:
            await self.unlock_everywhere(fp, token)
            err = refused[0].body.get("error", {})
            raise Locked(err.get("message", f"{fp.full} is locked elsewhere"),
                         holder=err.get("holder"), node=err.get("node"))
        return token

    async def renew_lock(self, fp, user, token):
        self.locks.acquire(fp, user, self.name, token, self.lock_lease)
        await asyncio.gather(*(self.client.lock(self.urls[p], fp, user, self.lock_lease, token)
                               for p in self.peers.running_peers()), return_exceptions=True)

    async def unlock_everywhere(self, fp, token):
        self.locks.release(fp, token)
        await asyncio.gather(*(self.client.unlock(self.urls[p], fp, token)
                               for p in self.peers.names), return_exceptions=True)

    async def delete(self, fp):
        """Tombstone the record everywhere and remove every copy that can be reached."""
        loc = self.locations.get(fp)
        if loc is None:
            raise NotFound(f"no file {fp}")
        tomb = Location(fp.owner, fp.rel, loc.origin, loc.digest, loc.algorithm, 0,
                        loc.version + 1, list(loc.replicas), time.time(), deleted=True)
        self.locations.apply(tomb)
        self.on_file_change(tomb, False)
        self._drop_local(fp)
        await asyncio.gather(*(self._delete_remote(h, fp, tomb.version)
                               for h in loc.holders if h != self.name))
        await self.broadcast([tomb])

    async def _delete_remote(self, server, fp, version):
        try:
            await self.client.delete_copy(self.urls[server], fp, version)
        except PeerError as e:
            # The tombstone still reaches it through the location sync when it is back.
            log.warning("could not delete %s on %s now: %s", fp, server, e)

    def _drop_local(self, fp):
        self.store.delete(fp)
        self.locations.forget_copy(fp)

    async def broadcast(self, locs):
        records = [loc.to_json() for loc in locs]
        # Every peer that answers heartbeats, not only those trusted to serve: one that has
        # just come back may already serve, and must not answer 404 for what it was not told.
        peers = [p for p in self.peers.names if self.peers.status(p) != DOWN]

        async def push(p):
            try:
                await self.client.push_locations(self.urls[p], records)
            except PeerError as e:
                log.warning("location broadcast to %s failed (it will pull later): %s", p, e)

        await asyncio.gather(*(push(p) for p in peers))

    # -- what peers send -------------------------------------------------------------------

    def apply_locations(self, records):
        """Apply records from a peer; drop local copies that a newer record no longer names."""
        for rec in records:
            loc = Location.from_json(rec)
            if not self.locations.apply(loc):
                continue
            fp = loc.file_path
            held = self.locations.copy_version(fp)
            if held is not None and (loc.deleted or self.name not in loc.holders) and held <= loc.version:
                self._drop_local(fp)

    def accept_copy(self, fp, version, digest, size):
        self.record_copy(fp, version, digest, size)

    def delete_copy(self, fp, version):
        held = self.locations.copy_version(fp)
        if held is not None and held < version:
            self._drop_local(fp)

    def set_admin_state(self, state):
        """Offline: answer nobody (heartbeats included), so the others mark this node down.
        Back online, it serves again only once its peers have verified its copies."""
        if state == "offline":
            self.peers.set_self(OFFLINE, "taken offline by the administrator")
        elif self.peers.self_status == OFFLINE:
            self.peers.set_self(VERIFYING if self.peers.names else RUNNING,
                                "put back online by the administrator")

    def purge_tombstones(self):
        """Forget deletions that every peer has pulled from this node."""
        if set(self.pulled_by) >= set(self.peers.names) and self.peers.names:
            return self.locations.purge_tombstones(min(self.pulled_by[p] for p in self.peers.names))
        return 0

    def status(self):
        used, available = self.store.usage()
        return {
            "name": self.name,
            "status": self.peers.self_status,
            "peers": self.peers.snapshot(),
            "used_bytes": used,
            "available_bytes": available,
            "replicas": self.replicas,
        }

    async def copy_lost(self, fp, reason):
        """This node no longer holds a good copy of ``fp``'s current version: publish the
        record with this node stale (same version), so nobody reads from it until a holder
        sends it a good copy again."""
        loc = self.locations.get(fp)
        if loc is None or self.name not in loc.current_holders:
            return
        try:
            token = await self.lock_everywhere(fp, self.name)
        except Locked:  # a writer is at work: its new version replaces this copy anyway
            log.warning("%s lost (%s) while being modified; left to the writer", fp, reason)
            return
        try:
            loc = self.locations.get(fp)
            if loc is None or self.name not in loc.current_holders:
                return
            loc.stale = loc.stale + [self.name]
            loc.modified = max(time.time(), loc.modified + 1e-6)
            self.locations.apply(loc)
            self.on_file_change(loc, len(loc.current_holders) - 1 < self.replicas)
            await self.broadcast([loc])
        finally:
            await self.unlock_everywhere(fp, token)
        log.warning("copy of %s lost (%s): published stale on %s", fp, reason, self.name)
