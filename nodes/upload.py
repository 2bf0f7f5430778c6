"""One upload on the node that coordinates it: the write protocol, free of HTTP.

``StorageNode.begin_upload`` decides where a PUT goes (a ``Redirect`` to the file's
coordinator, or an ``Upload`` here). An ``Upload`` owns what the write holds while its body
arrives: the user's upload slot, the file's lock from a majority and its lease renewals,
the temp file, the pipeline that streams the body on to the replicas, and the room it
reserved in its owner's quota (``nodes/quota.py``). Nothing is committed before the lock is
held; whatever way the upload ends, ``close()`` gives all of it back.
"""
import asyncio
import copy
import logging
from dataclasses import dataclass

from tornado.ioloop import PeriodicCallback

from securifile.common.errors import ApiError, Forbidden, Unavailable

from .locationmap import Location
from .pipeline import BATCH, Pipeline
from .placement import place_replicas, under_replicated
from .upload_limits import ProgressWatch

log = logging.getLogger("securifile.http")
# A body of at most this many bytes is kept in memory and sent to the replicas with its
# record, in one message each, once the origin's copy is committed (``_finish``).
SMALL_BODY = 1 << 20


@dataclass
class Redirect:
    """The request belongs on another server: the holder or coordinator ``target``."""

    target: str


@dataclass
class Stored:
    """A committed upload: its record (as JSON, with its replication state) and whether it
    created the file."""

    body: dict
    created: bool


@dataclass
class UploadPlan:
    """What an upload will make, decided under its lock: the new record (its digest and size
    filled in at the end) and the replicas to copy to, in priority order."""

    loc: Location
    targets: list
    fresh: bool  # a new file (or a name deleted before): a failed replica gets a spare


class Upload:
    """One PUT's write under way on this node (see the module docstring).

    ``cut_off()`` is called when the body arrives too slowly to keep the lock: the caller
    closes the connection (and then ``close()``s the upload).
    """

    def __init__(self, node, fp, user, length, declared, sent_here, avoid, cut_off):
        self.node = node
        self.fp = fp
        self.user = user
        self.length = length
        self.declared = declared  # the Content-Digest the client declared, checked as it arrives
        self.sent_here = sent_here
        self.avoid = avoid
        self.existing = None  # the file's current record once the lock is held (None: new)
        self.cut_off = cut_off
        self.writer = None
        self.pipeline = None
        self.ticket = None
        self.plan = None
        self.progress = None
        self.renewal = None
        self.failure = None  # a write error or a refused quota: the body is dropped from then
        self.quota = None  # the room reserved in the owner's quota (None: no quota)
        self.closed = False
        self._finishing = False  # finish() runs: the body is whole, its commit under way
        self._close_when_finished = False
        self._locking = None  # the lock round run while a small body arrives
        self._body = None  # a small body's pieces, kept to send the replicas from memory
        self._space = None  # the view a body read in place is being read into
        self._slot = None  # the user whose upload slot this upload holds

    @property
    def size(self):
        """Bytes received so far; None before the temp file is open."""
        return self.writer.size if self.writer is not None else None

    async def start(self, body_first=False):
        """Take the lock and get ready for the body; the coordinator to redirect to when the
        majority's newest record names another one, else None.

        ``body_first``: the body is on its way already (a small one, sent without waiting for
        ``100-continue``): the lock round runs while it arrives into a temp file (nothing is
        committed before ``finish()`` has the lock); its replicas get it from memory once
        the origin's copy is at its name (see ``finish``).
        TooManyUploads (429) when the user has all the uploads allowed under way.
        """
        self.node.upload_slots.take(self.user)
        self._slot = self.user
        if self.node.quotas is not None:  # room in the owner's quota before any byte is taken
            self.quota = await self.node.quotas.reserve(self.fp, self.length)
        if body_first:
            self.writer = self.node.store.writer(self.fp, self.node.algorithm)
            if self.length is not None:  # at most SMALL_BODY (nodes/http.py sees to it)
                self._body = []
            self._locking = asyncio.ensure_future(self._take_lock())
            return None
        where = await self._take_lock()
        if where is not None or self.closed:
            return where
        self.writer = self.node.store.writer(self.fp, self.node.algorithm)
        if self.length is not None and self.length <= SMALL_BODY:
            # Asked for after the lock round (``Expect: 100-continue``, as curl 7 asks for any
            # upload over 1 KiB): still small, so its replicas get it from memory with the
            # record, not streamed over HTTP (1.1x the rate, less CPU on every holder).
            self._body = []
        elif self.length is not None:
            # The replicas, chosen now that the lock is held, receive the body as it arrives.
            self.pipeline = self._open_pipeline()
        return None

    async def _take_lock(self):
        """Take the file's lock from a majority and plan the upload; the coordinator to
        redirect to when the majority's newest record names another one."""
        node, fp = self.node, self.fp
        ticket = await node.lock(fp, self.user)
        if self.closed:  # the client went away while the lock round ran
            node.release(ticket)
            return None
        self.ticket = ticket
        # The lock brought the majority's newest record: the route may have changed.
        kind, where = node.route_write(fp, self.sent_here, self.avoid)
        if kind == "redirect":
            self._give_back_lock()
            return where
        self.existing = where
        if self.existing is None and self.user != fp.owner:
            self._give_back_lock()
            raise Forbidden("only the owner creates files in a namespace")
        self.progress = ProgressWatch(node.min_upload_rate)
        self.renewal = PeriodicCallback(self._renew_lock, node.lock_lease * 1000 / 3)
        self.renewal.start()
        self.plan = plan_new_version(self.node, self.ticket)
        return None

    def _open_pipeline(self):
        """Start sending the body to the plan's replicas as it arrives; None when there is
        nothing to pipeline (no replica, or an empty body, which would be complete, and
        committed there, before the origin has it)."""
        plan, node = self.plan, self.node
        if not plan.targets or not self.length:
            return None
        announced = copy.copy(plan.loc)
        announced.digest = self.declared.own  # None: the replica answers the one it computed
        return Pipeline(node.client, node.urls, plan.loc.file_path, announced, self.length,
                        plan.targets, stall=node.client.timeout, active=node.pipelines)

    def write(self, chunk):
        """Take the next piece of the body; an awaitable when the replicas need the caller to
        wait before it reads on (the slowest replica paces the client), or when the quota
        reservation must grow first; else None. A refusal sets ``failure``."""
        if self.writer is None or self.failure is not None:
            return None
        if self.quota is not None and self.quota.needs(self.writer.size + len(chunk)):
            return self._write_beyond_reservation(chunk)
        return self._write(chunk)

    async def _write_beyond_reservation(self, chunk):
        """A body of unknown length ran past its reservation: more room first."""
        try:
            await self.quota.cover(self.writer.size + len(chunk))
        except ApiError as e:
            self._refuse(e)
            return
        pending = self._write(chunk)
        if pending is not None:
            await pending

    def _write(self, chunk):
        return self._take(chunk, self.writer.write, chunk)

    def _take(self, chunk, store, arg):
        """The body's next ``chunk``, put in the temp file by ``store(arg)``: into the
        declared digests, kept if the body is small, fed to the replicas."""
        try:
            store(arg)
            self.declared.update(chunk)
        except ApiError as e:
            self._refuse(e)
            return None
        if self._body is not None:
            self._body.append(chunk)
        if self.pipeline is not None:
            return self.pipeline.feed(chunk)
        return None

    def sink(self):
        """Itself, as the sink of a body read in place (``common/direct_bodies.py``), when
        that suits: a body of known length, neither kept in memory nor beyond its quota
        reservation; else None (the body comes through ``write``)."""
        if (self.writer is None or self.failure is not None or self.length is None
                or self._body is not None
                or (self.quota is not None and self.quota.needs(self.length))):
            return None
        return self

    def space(self):
        """Where the next bytes of the body go, in place; None once refused."""
        if self.failure is not None:
            return None
        self._space = self.writer.space()
        if self.pipeline is not None:
            # Pieces the size of a batch to the replicas: each is copied for them, and
            # bigger fresh objects, several queued at once, grew the heap.
            self._space = self._space[:BATCH]
        return self._space

    def filled(self, n):
        """``n`` bytes were read into ``space()``: ``write`` without its copies."""
        view, self._space = self._space, None
        # The replicas get a copy: the buffer is filled again once written.
        chunk = bytes(view[:n]) if self.pipeline is not None else view[:n]
        return self._take(chunk, self.writer.filled, n)

    def _refuse(self, error):
        """Stop storing (answered by finish(), or by the handler while the rest of the body
        arrives): the temp file, the replicas' partial copies and the lock go now."""
        self.failure = error
        if self.writer is not None:
            self.writer.abort()
        self._drop_pipeline()
        self._give_back_lock()

    async def finish(self):
        """The whole body is here: commit it under the lock, replicate, publish the record.
        A ``Stored``, or a ``Redirect`` when the lock round run meanwhile found another
        coordinator.

        Once it runs, neither a client that goes away nor the minimum rate cuts it short:
        a close meanwhile waits for its end. Cut in the middle, the lock went back while the
        new bytes were renamed in without their record (a nemesis run: the lock round slowed
        by a partition, the upload cut off as too slow, a 500, and the next challenge failed
        a peer whose good copy differed from those bytes)."""
        self._finishing = True
        try:
            with self.node.finishing.running():
                return await self._finish_whole()
        finally:
            self._finishing = False
            if self._close_when_finished:
                self.close()

    async def _finish_whole(self):
        node = self.node
        if self._locking is not None:
            if self.failure is None:
                self.writer.presync()  # the body's fsync runs while the lock round ends
            locking, self._locking = self._locking, None
            try:
                where = await locking
            except ApiError as e:
                where, self.failure = None, self.failure or e
            if where is not None and self.failure is None:
                return Redirect(where)
        if self.failure is not None:
            raise self.failure
        try:
            self.declared.check_others()
        except ApiError:
            self.writer.abort()  # gone before the client hears of it (the pipeline too)
            raise
        digest = await self.writer.commit_async(self.declared.own)
        piped = None
        if self.pipeline is not None:
            # Only now, the origin's copy committed under a live lock, do the replicas get
            # the last bytes (and commit theirs).
            node.check_held(self.ticket)
            piped = await self.pipeline.finish(digest, max(30.0, node.client.timeout))
            self.pipeline = None
        loc, confirmed = await self._finish(digest, piped)
        if self.quota is not None:
            self.quota.committed()  # queued after the file's own report
        if not confirmed:
            raise Unavailable(f"{self.fp.full} was stored on {node.name} but no majority "
                              "confirmed its record: it may or may not last", code="no_quorum")
        # The answer: the record, and how far it is replicated.
        body = loc.to_json()
        body["under_replicated"] = under_replicated(loc, node.replicas)
        body["replicas_wanted"] = node.replicas
        return Stored(body, self.existing is None)

    async def _finish(self, digest, piped=None):
        """Copies and the record; (record, confirmed). A small body kept in memory goes to
        the replicas with its record in one round (``StorageNode.finish_small_upload``);
        otherwise what the pipeline did not copy is copied from disk and the record follows.
        The record releases the lock on every peer before the answer goes out: the client
        may write the file again at once."""
        node = self.node
        self.renewal.stop()
        ticket, self.ticket = self.ticket, None
        sums = self.writer.sums.packed()
        try:
            if self._body is not None and self.plan.targets:
                return await node.finish_small_upload(ticket, digest, self.writer.size,
                                                      self.plan, b"".join(self._body), sums)
            return await node.finish_upload(ticket, digest, self.writer.size, self.plan, piped,
                                            sums=sums)
        except BaseException:
            node.release(ticket)
            raise

    async def _renew_lock(self):
        if self.ticket is None:
            return
        if (not self._finishing and self.writer is not None
                and self.progress.too_slow(self.writer.size)):
            # No lease without progress: a trickled body must not hold the file for ever.
            log.warning("upload of %s by %s slower than %d B/s: cut off", self.fp.full,
                        self.user, self.node.min_upload_rate)
            self.cut_off()
            return
        await self.node.renew(self.ticket)

    def _give_back_lock(self):
        if self.ticket is not None:
            if self.renewal is not None:
                self.renewal.stop()
            ticket, self.ticket = self.ticket, None
            self.node.release(ticket)

    def _drop_pipeline(self):
        if self.pipeline is not None:
            self.pipeline.abort()
            self.pipeline = None

    def close(self):
        """The request is over (answered, refused or broken off): give everything back. The
        temp file goes (a committed one is already in place), the replicas see their bodies
        cut and keep nothing, and the lock goes (the lease bounds how long it could linger
        on a peer that does not hear of it). While ``finish()`` runs, only at its end."""
        if self._finishing:
            self._close_when_finished = True
            return
        self.closed = True
        if self._locking is not None:
            # Its lock, if it gets one, is given back as soon as it has it (see _take_lock).
            self._locking.add_done_callback(_retrieve)
            self._locking = None
        if self.writer is not None:
            self.writer.abort()
        self._drop_pipeline()
        self._give_back_lock()
        if self._slot is not None:
            self.node.upload_slots.give_back(self._slot)
            self._slot = None
        if self.quota is not None:
            self.quota.release()  # nothing once committed


def _retrieve(task):
    if not task.cancelled():
        task.exception()  # a refused lock nobody waits for any more: nothing to report


def plan_new_version(node, ticket):
    """The new version's record and its replicas, chosen once the lock is held (the lock
    brought the majority's newest record); shared by PUT and resumable uploads."""
    fp, existing = ticket.fp, ticket.existing
    if existing is None or existing.deleted:
        # A name that was deleted before starts above its tombstone's version.
        version = existing.version + 1 if existing else 1
        loc = Location(fp.owner, fp.rel, node.name, None, node.algorithm, 0, version, [],
                       0.0, stamp=ticket.stamp, coordinator=node.name)
        wanted = place_replicas(node.placeable_peers(), node.replicas, node.rng)
        return UploadPlan(loc, wanted, True)
    loc = Location(fp.owner, fp.rel, existing.origin, None, node.algorithm, 0,
                   existing.version + 1, [], 0.0, stamp=ticket.stamp, coordinator=node.name)
    wanted = [h for h in existing.holders if h != node.name and node.peers.is_running(h)]
    return UploadPlan(loc, wanted, False)
