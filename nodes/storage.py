"""The storage logic of one node: where a request goes, how a file is placed, copied and
changed under a majority's lock.

Every change of a file's record (a new version, a delete, a change of holders) is made by one
coordinator holding the file's lock from a majority of the servers, takes a stamp above
every stamp those servers know or reserved (see ``locks``), and is published to every
reachable peer before the lock goes; it counts as done once a majority stores it.

No HTTP here: handlers call these methods and turn the domain errors into status codes.
"""
import asyncio
import copy
import logging
import time
import uuid

from securifile.common.errors import ApiError, Conflict, Locked, NotFound, Unavailable
from securifile.common.syslog import access_event

from .challenge import stat_key
from .contentdigest import DeclaredDigests
from .doubted_reads import DoubtedReads
from .download import Download
from .finishing import FinishingWrites
from .locationmap import Location
from .locks import LockTable
from .majority_lock import MajorityLocking
from .replication import Replication
from .observed import observed
from .peer_requests import PeerRequests
from .peerclient import PeerError
from .peers import DOWN, FAILED, OFFLINE, RUNNING, VERIFYING
from .placement import place_replicas, serving_holder, under_replicated
from .pushed import OwnCounter, PushedSpans
from .refusals import Refusals
from .upload import Redirect, Upload
from .upload_limits import UploadSlots

log = logging.getLogger("securifile.storage")


class StorageNode(MajorityLocking, Replication, DoubtedReads, PeerRequests):
    def __init__(self, name, urls, replicas, algorithm, store, locations, peers, peer_client, rng,
                 lock_lease=30.0, quorum=None, call_timeout=3.0):
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
        self.quorum = quorum
        # Lock and record calls wait this long for a peer: one that does not answer within
        # it cannot be counted on, and must not hold every write up for a long timeout.
        self.call_timeout = call_timeout
        self.doubt_window = 0.0  # seconds a missed beat leaves a peer doubted (set by main)
        # Peers whose locks and records are refused; the lease of a promise to refuse them
        # (a few heartbeats, set by main; 0: nothing promised).
        self.refusals = Refusals(peers.status, lease=0.0)
        self.catch_up = None  # HeartbeatLoop.catch_up(peer), set by main()
        self.pulled_by = {}  # peer -> the last of this node's sequence numbers it has pulled
        # Numbers for the records this node publishes, and those of each peer's pushed
        # here: a pull skips what was pushed (nodes/pushed.py).
        self.counter = OwnCounter(locations)
        self.pushed = PushedSpans(name, self.counter)
        # Told of every change this node coordinated: (location, under_replicated).
        self.on_file_change = lambda loc, under_replicated: None
        # Told of records a peer pushed: (peer, its seq before them, its seq after them), so
        # the heartbeat does not pull them again (HeartbeatLoop.note_pushed).
        self.on_pushed = lambda peer, before, after: None
        self.audit = None  # a SyslogSender for the audit log, when one is configured
        self.upload_slots = UploadSlots(0)  # uploads per user at a time (0: any number)
        self.min_upload_rate = 0.0  # bytes a second an upload must keep to keep its lock
        self.quotas = None  # a QuotaKeeper when an admin server keeps owners' quotas
        self._background = set()
        self.pipelines = set()  # uploads whose body is being streamed to replicas
        self.finishing = FinishingWrites()  # whole bodies being committed: a stop waits
        self.quarantined = 0  # bad copies moved aside since start
        self.membership = None  # NodeMembership: the list of servers, its epoch
        self.draining = set()  # servers being retired: no new copies go to them
        self.boot = uuid.uuid4().hex  # tells peers this process from a restarted one
        self.listeners = {}  # method name -> calls to make after it (see observed.py)

    def log_access(self, user, op, path, result, size=None):
        """One line in the audit log for a user's file access; never fails the request."""
        if self.audit is not None:
            self.audit.log_event(access_event(user, op, path, self.name, result, size))

    # -- may this node serve? --------------------------------------------------------------

    def require_serving(self):
        """Unavailable (503) unless this node is running and hears a majority."""
        status = self.peers.self_status
        if status in (FAILED, OFFLINE):  # whatever the majority says, it serves nobody
            raise Unavailable(f"server {self.name} is {status}", code="server_not_running")
        # The states below pass by themselves (a heartbeat or a verification later): a client
        # that has no other server to ask may ask this one again soon.
        soon = {"Retry-After": "1"}
        if self.quorum is not None and not self.quorum.has():
            if not self.quorum.ever:
                raise Unavailable(f"server {self.name} has not caught up with its peers yet",
                                  code="not_synced", headers=soon)
            raise Unavailable(f"server {self.name} is cut off from the majority of the cluster: "
                              f"{self.quorum.detail()}", code="no_quorum", headers=soon)
        if self.peers.self_status != RUNNING:
            raise Unavailable(f"server {self.name} is {self.peers.self_status}",
                              code="server_not_running", headers=soon)

    def _enough(self, count):
        return self.quorum is None or self.quorum.enough(count)

    def _voters(self):
        """Peers that may answer a lock or take a record: all but those seen down."""
        return [p for p in self.peers.names if self.peers.status(p) != DOWN]

    # -- routing ---------------------------------------------------------------------------

    def _can_serve(self, loc, name):
        if name in loc.stale:
            return False
        if name != self.name:
            return self.peers.is_running(name)
        if not self.peers.is_running(name):
            return False
        # Its own copy must be of this very version: same number and same committed digest
        # (a write lost in a partition can leave other bytes under the same number).
        held = self.locations.copy_record(loc.file_path)
        return held is not None and held[0] == loc.version and held[1] == loc.digest

    def route_read(self, fp, sent_here=False, avoid=()):
        """('serve', loc) when this node answers, ('redirect', name) of the holder to ask.

        ``sent_here`` says another node already chose this one (the redirect named it): a
        holder with a current copy then serves, even if its own view of the holders ahead
        of it lags behind the redirecting node's. ``avoid`` names servers the client could
        not reach: they are passed over until this node sees them down too.
        """
        loc = self.locations.get(fp)
        if loc is None:
            raise NotFound(f"no file {fp}")
        if sent_here and self.name in loc.holders and self._can_serve(loc, self.name):
            return "serve", loc
        target = serving_holder(
            loc, lambda n: (n == self.name or n not in avoid) and self._can_serve(loc, n))
        if target is None:
            # A holder being verified (after a restart, say) serves in a moment: say so.
            soon = any(self.peers.coming_back(h) for h in loc.holders
                       if h not in avoid and h not in loc.stale)
            raise Unavailable(
                f"no server holding {fp} is running (holders: {', '.join(loc.holders)})",
                code="no_holder_running", file=fp.full,
                headers={"Retry-After": "1"} if soon else None)
        if target == self.name:
            return "serve", loc
        return "redirect", target

    async def begin_read(self, fp, sent_here=False, avoid=()):
        """A Redirect to the holder to ask, or the Download this node serves (see route_read),
        from the newest record a majority holds while a peer is doubted (doubted_reads.py)."""
        await self.read_newest(fp)
        kind, where = self.route_read(fp, sent_here, avoid)
        if kind == "redirect":
            return Redirect(where)
        return Download(self, where, self.store.size(fp))

    async def list_files(self, fp):
        """The records under the folder ``fp`` (or the owner's whole namespace), as JSON,
        the peers' newest pulled first while one is doubted (doubted_reads.py)."""
        await self.list_newest(fp)
        return [loc.to_json() for loc in self.locations.list_prefix(fp.owner, fp.rel)]

    def route_write(self, fp, sent_here=False, avoid=()):
        """For a PUT: ('local', existing loc or None) or ('redirect', name of the coordinator)."""
        loc = self.locations.get(fp)
        if loc is None:
            anc = self.locations.file_ancestor(fp)
            if anc is not None:
                raise Conflict(f"{anc} is a file, so {fp} cannot be created under it",
                               code="parent_is_a_file")
            if self.locations.has_folder(fp):
                raise Conflict(f"{fp} is a folder", code="is_a_folder")
            if self.name in self.draining:  # a new file's origin must not be a leaving server
                others = [p for p in self.placeable_peers() if p not in avoid]
                if others:
                    return "redirect", place_replicas(others, 1, self.rng)[0]
            return "local", None
        kind, where = self.route_read(fp, sent_here, avoid)
        return ("local", loc) if kind == "serve" else (kind, where)

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def peer_changed(self, name, old, new):
        """A peer seen down or back from a restart: its uploads died with it, so the locks it
        coordinated go now rather than when their leases run out. A peer back from down
        gets a new channel."""
        if new in (DOWN, VERIFYING) and self.locks.release_node(name):
            log.warning("released the locks coordinated by %s (%s)", name, new)
        if new == DOWN:
            # A replica seen down (dead or hung) is dropped from the uploads streaming to
            # it now, rather than after it has held each of them up for the stall timeout.
            for pipeline in list(self.pipelines):
                pipeline.drop_peer(name, "seen down")
        if new in (DOWN, FAILED):
            self._serve_unjudged(f"{name} {new}")
        if old == DOWN and name in self.urls:
            # Calls during the cut or hang may have left its channel stuck in TCP's
            # retransmission backoff, where a read that asks it waits out its deadline.
            self.client.drop_channel(self.urls[name])

    # -- publishing records ----------------------------------------------------------------

    @observed
    async def publish(self, locs, ticket=None):
        """Apply ``locs`` here and send them to every reachable peer, releasing ``ticket``'s
        lock there with them. True when a majority (this node included) stores them."""
        before = self.locations.seq
        numbered = self.counter.take(locs)
        for loc in locs:
            self._apply_own(loc)
        # Nothing else changes the map in between: a peer that has pulled up to ``before``
        # has every change up to the new seq once it applies these (no pull for them).
        seq = (before, self.locations.seq)
        records = [loc.to_json() for loc in locs]
        release = ([{"owner": ticket.fp.owner, "path": ticket.fp.rel, "token": ticket.token}]
                   if ticket else None)
        peers = self._voters()

        async def push(p):
            try:
                await self.client.push_locations(self.urls[p], records, release,
                                                 timeout=self.call_timeout, seq=seq,
                                                 numbered=numbered)
                return True
            except PeerError as e:
                log.warning("records to %s failed (it will pull them later): %s", p, e)
                return False

        acked = await asyncio.gather(*(push(p) for p in peers))
        if ticket is not None:
            self.release(ticket, skip={p for p, ok in zip(peers, acked) if ok})
        return self._enough(1 + sum(acked))

    def _apply_own(self, loc):
        if self.locations.apply(loc):
            self.on_file_change(loc, under_replicated(loc, self.replicas))

    async def amend(self, fp, change, why):
        """Change the holders of ``fp``'s current record under its lock; the new record, or
        None when ``change`` had nothing to do (or the file is gone).

        ``change(loc)`` edits a copy of the newest record and returns False to drop it.
        Locked or Unavailable pass to the caller, which tries again later.
        """
        ticket = await self.lock(fp, why)
        published = False
        try:
            cur = ticket.existing
            if cur is None or cur.deleted:
                return None
            new = copy.deepcopy(cur)
            if change(new) is False:
                return None
            new.stamp, new.coordinator = ticket.stamp, self.name
            new.modified = max(time.time(), cur.modified + 1e-6)
            published = True
            await self.publish([new], ticket)
            return new
        finally:
            if not published:
                self.release(ticket)

    # -- writes ----------------------------------------------------------------------------

    def begin_upload(self, fp, user, length=None, content_digest=None, sent_here=False, avoid=(),
                     max_bytes=None, cut_off=lambda: None):
        """Where a PUT of ``length`` bytes (None: not announced) goes: a Redirect to the
        file's coordinator, or an Upload here (``await upload.start()`` takes the lock).

        Locked (423) at once while anyone writes the file, before any redirect; 413 beyond
        ``max_bytes``, 507 when the disk has no room; 400 for a bad ``Content-Digest``.
        """
        self.locks.check(fp)
        kind, where = self.route_write(fp, sent_here, avoid)
        if kind == "redirect":
            return Redirect(where)
        if length is not None:
            if max_bytes is not None and length > max_bytes:
                raise ApiError(f"file larger than {max_bytes} bytes", status=413,
                               code="too_large")
            self.store.check_room(length)
        declared = DeclaredDigests.from_header(content_digest, self.algorithm)
        return Upload(self, fp, user, length, declared, sent_here, avoid, cut_off)

    def record_copy(self, fp, version, digest, size, sums=None):
        """Note the copy just committed, with the stat key that lets challenges reuse its
        digest and reads use its checksums (``sums``: packed ``ChunkSums``, or None)."""
        self.locations.record_copy(fp, version, digest, size, stat_key(self.store.path_for(fp)),
                                   sums)

    async def delete(self, fp, user, up_to_version=None):
        """Tombstone the record under the file's lock; every holder drops its copy when the
        tombstone reaches it (now, or when it pulls it on its return). ``up_to_version``:
        only a version no newer than that (Conflict otherwise): what a purge saw due."""
        ticket = await self.lock(fp, user)
        loc = ticket.existing
        if loc is None or loc.deleted:
            self.release(ticket)
            raise NotFound(f"no file {fp}")
        if up_to_version is not None and loc.version > up_to_version:
            self.release(ticket)
            raise Conflict(f"{fp} was written again (version {loc.version})",
                           code="file_changed")
        tomb = Location(fp.owner, fp.rel, loc.origin, loc.digest, loc.algorithm, 0,
                        loc.version + 1, list(loc.replicas), time.time(), deleted=True,
                        stamp=ticket.stamp, coordinator=self.name)
        self._drop_local(fp)
        return await self.publish([tomb], ticket)

    async def mark_fresh(self, peer, locs):
        """``peer`` now holds the current version of each of ``locs``: publish that."""
        for loc in locs:
            if peer not in loc.stale:
                continue
            version = loc.version

            def fresh(cur):
                if cur.version != version or peer not in cur.stale:
                    return False
                cur.stale = [h for h in cur.stale if h != peer]

            try:
                await self.amend(loc.file_path, fresh, "(repair)")
            except (Locked, Unavailable) as e:
                log.warning("could not publish the repaired copy of %s on %s: %s",
                            loc.file_path, peer, e)

    async def copy_lost(self, fp, reason):
        """This node lost its good copy of ``fp`` (quarantined): publish itself as stale, so
        nobody reads from it and the serving holder sends it a good copy again."""
        me = self.name
        self._drop_local(fp)

        def stale(cur):
            if me not in cur.holders or me in cur.stale:
                return False
            cur.stale = [*cur.stale, me]

        log.warning("copy of %s lost here (%s): marked stale for repair", fp, reason)
        try:
            await self.amend(fp, stale, "(repair)")
        except (Locked, Unavailable) as e:
            log.warning("could not publish the lost copy of %s yet: %s", fp, e)

    def _drop_local(self, fp):
        # The record goes first: a process killed between the two steps then leaves a file
        # nobody recorded (a challenge finds it not held and repair sends a live file
        # afresh; a deleted one's bytes stay until the name is written again), never a
        # recorded copy that is gone, which a challenge calls missing and fails this node for.
        with self.store.changing(fp):  # a challenge answered meanwhile must not say missing
            self.locations.forget_copy(fp)
            self.store.delete(fp)

    def set_admin_state(self, state):
        """Offline: answer nobody (heartbeats included), so the others mark this node down.
        Back online, it serves again only once its peers have verified its copies. The
        status that follows."""
        if state == "offline":
            self.peers.set_self(OFFLINE, "taken offline by the administrator")
        elif self.peers.self_status == OFFLINE:
            self.peers.set_self(VERIFYING if self.peers.names else RUNNING,
                                "put back online by the administrator")
        return self.peers.self_status

    def placeable_peers(self):
        """Running peers that may take new copies (not being drained)."""
        return [p for p in self.peers.running_peers() if p not in self.draining]

    def set_removed(self):
        """This server was taken out of the cluster: it serves nobody from now on."""
        if self.peers.self_status != OFFLINE:
            self.peers.set_self(OFFLINE, "removed from the cluster's membership")

    def quorum_changed(self, has, detail):
        """Cut off from the majority: verifying from now on, so that when it rejoins it
        serves only once its peers have checked its copies, like any returning server."""
        if not has and self.peers.self_status == RUNNING and self.quorum.ever:
            self.peers.set_self(VERIFYING, f"cut off from the majority ({detail})")
        elif has:
            self._serve_unjudged(detail)

    def _serve_unjudged(self, detail):
        """Verifying, with the majority, and no peer left to judge it (two servers, one dead,
        the witness breaking the tie): nobody can check its copies; it serves (the scrubber
        still checks them), rather than wait for a peer that may never come back."""
        if (self.peers.self_status == VERIFYING and self.quorum is not None and self.quorum.has()
                and not any(self.peers.status(p) not in (DOWN, FAILED) for p in self.peers.names)):
            self.peers.set_self(RUNNING, f"serving with the majority, no peer to verify it ({detail})")

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
            "quorum": self.quorum.has() if self.quorum is not None else True,
            "doubted": sorted(self.peers.doubted(self.doubt_window)),
            "peers": self.peers.snapshot(),
            "used_bytes": used,
            "available_bytes": available,
            "replicas": self.replicas,
            # The membership this node counts its majority over (nodes/membership.py).
            "epoch": self.membership.epoch if self.membership is not None else 0,
            "members": self.membership.servers if self.membership is not None else [],
            # New connections to peers (a TLS handshake each) and calls made over them.
            "peer_client": self.client.stats(),
        }
