"""Resumable uploads (IETF draft-ietf-httpbis-resumable-upload): the rules, free of HTTP.

Locks: a partial upload holds its file's cluster-wide lock only while its bytes flow, one
request at a time, with the normal lease renewed as for any upload (and cut off below the
minimum rate); between requests the file is free. Each request retakes the lock, and the
lock round brings the majority's newest record: if the file changed since the upload began
(another writer's version, a delete), the upload can never complete as the client meant it,
so it is refused (412 ``upload_outdated``) and thrown away; the client starts over. So a
stale partial upload never locks anything, and the sweep removes it after the expiry.

Completion: the whole file is checked against the declared whole-file digests (the node's
own algorithm as the bytes arrive, others read back from disk), committed by the same
fsync-and-rename as any upload, copied to its replicas from disk and published under the
lock by ``StorageNode.finish_upload``: one path for every new version. Replicas do not get
parts as they arrive: parts may come hours apart, and a replica holding partial state of
its own would need its own expiry, sweep and crash recovery for a saving of one copy.

Quotas: each request reserves, before it takes a byte, what the file will reach (the
declared ``Upload-Length``, else the offset plus the request's ``Content-Length``, else step
by step as the bytes arrive), under one reservation id kept with the upload: the request
renews it, and takes it again if it expired between requests (507 then only if the owner's
usage grew meanwhile). A refused request keeps the bytes that arrived within the reservation.
Cancelling or discarding the upload gives the reservation back; between requests it lapses
by itself after ``quota_reservation_seconds``, so a swept upload holds nothing.
"""
import asyncio
import logging
from urllib.parse import quote

from tornado.ioloop import PeriodicCallback

from securifile.common.errors import ApiError, Forbidden, Locked

from .diskfile import DigestMismatch
from .upload import plan_new_version
from .upload_limits import ProgressWatch

log = logging.getLogger("securifile.resumable")

TAKE_OVER_SECONDS = 10.0  # how long a new request waits for the previous one to let go
OWN_LOCK_RETRIES = 20  # a lock of this upload's previous request still on a peer: retried
OWN_LOCK_PAUSE = 0.1


class UploadOutdated(ApiError):
    status, code = 412, "upload_outdated"


class OffsetMismatch(ApiError):
    status, code = 409, "mismatching_upload_offset"


class CompletedUpload(ApiError):
    status, code = 400, "completed_upload"


class InconsistentLength(ApiError):
    status, code = 400, "inconsistent_upload_length"


class UploadBusy(ApiError):
    status, code = 409, "upload_busy"


def current_version(ticket):
    """The version a lock round found for the file (0: none); a tombstone counts."""
    return ticket.existing.version if ticket.existing is not None else 0


class HeldLock:
    """A file's lock while one request's bytes flow: renewed every third of the lease; an
    upload slower than the minimum rate is cut off (``cut_off``) instead of renewed."""

    def __init__(self, node, ticket, received, cut_off):
        self.node = node
        self.ticket = ticket
        self.received = received  # () -> bytes received so far
        self.cut_off = cut_off
        self.progress = ProgressWatch(node.min_upload_rate)
        self.flowing = True  # bytes still expected: the minimum rate applies
        self._renewing = None
        self.renewal = PeriodicCallback(self._renew, node.lock_lease * 1000 / 3)
        self.renewal.start()

    async def _renew(self):
        if self.ticket is None:
            return
        if self.flowing and self.progress.too_slow(self.received()):
            log.warning("resumable upload of %s slower than %d B/s: cut off", self.ticket.fp,
                        self.node.min_upload_rate)
            self.cut_off()
            return
        self._renewing = asyncio.ensure_future(self.node.renew(self.ticket))
        await self._renewing

    async def settle(self):
        """No more renewals, and none still on its way: the record that releases the lock
        must not be overtaken by a renewal that takes it again on a peer."""
        self.renewal.stop()
        if self._renewing is not None and not self._renewing.done():
            await asyncio.wait({self._renewing})

    def take(self):
        """The ticket, now the caller's to publish under (it releases the lock)."""
        self.renewal.stop()
        ticket, self.ticket = self.ticket, None
        return ticket

    def release(self):
        self.renewal.stop()
        if self.ticket is not None:
            ticket, self.ticket = self.ticket, None
            self.node.release(ticket)


class ResumableUploads:
    """Creating, resuming, appending to and completing the partial uploads of one node."""

    def __init__(self, node, partials):
        self.node = node
        self.partials = partials
        self._background = set()  # reservations being given back

    async def reserve(self, fp, total, offset, rid=None):
        """Room in the owner's quota for the file to reach ``total`` bytes (None: unknown,
        reserved step by step from ``offset``); None when the owner has no quota."""
        if self.node.quotas is None:
            return None
        return await self.node.quotas.reserve(fp, total, rid=rid, received=offset)

    def cancel(self, upload):
        """Throw ``upload`` away, and give its quota reservation back at once."""
        self.partials.remove(upload)
        log.info("resumable upload %s of %s cancelled", upload.id, upload.file_path.full)
        if self.node.quotas is not None and upload.reservation:
            self.node.quotas.give_back(upload.reservation, self._background)

    # -- what a request asks before and between its lock rounds --

    def check_unlocked(self, fp):
        """Locked (423) at once while anyone else writes ``fp``."""
        self.node.locks.check(fp)

    def check_body(self, length, offset, incoming, max_bytes, creation=False):
        """413 for a declared ``length`` beyond ``max_bytes``; InconsistentLength when the
        ``incoming`` bytes at ``offset`` go past it; 507 without room for them (or, for a
        ``creation``, for the whole declared length)."""
        if length is not None and length > max_bytes:
            raise ApiError(f"file larger than {max_bytes} bytes", status=413, code="too_large")
        if incoming is not None:
            if length is not None and offset + incoming > length:
                raise InconsistentLength(f"{offset} + {incoming} bytes go past the upload's "
                                         f"length of {length}")
            self.node.store.check_room(incoming)
        if creation and length is not None:
            self.node.store.check_room(length)

    def take_slot(self, user):
        """One of the node's upload slots for ``user`` (429 when they are all taken)."""
        self.node.upload_slots.take(user)

    def give_back_slot(self, user):
        self.node.upload_slots.give_back(user)

    def get(self, upload_id, user):
        """The upload, for the user who created it (404 for anybody else)."""
        return self.partials.get(upload_id, user)

    def offset(self, upload):
        return self.partials.offset(upload)

    def expires_in(self, upload):
        return self.partials.expires_in(upload)

    def declare(self, upload, length, digests):
        """A later request's ``Upload-Length`` and ``Repr-Digest``, saved with the upload."""
        if length is not None:
            upload.length = length
        upload.digests.update(digests)
        self.partials.save(upload)

    def upload_url(self, upload_id):
        return f"{self.node.urls[self.node.name]}/uploads/{upload_id}"

    def creation_url(self, server, fp):
        """Where to create an upload of ``fp`` on ``server`` (its coordinator)."""
        return (f"{self.node.urls[server]}/uploads/{quote(fp.owner, safe='')}/"
                f"{quote(fp.rel, safe='/')}")

    async def _lock(self, fp, user):
        """The file's lock; a lock this node still holds on a peer for the same user (the
        previous request of this very upload, its release on the way) is waited out."""
        for attempt in range(OWN_LOCK_RETRIES):
            try:
                return await self.node.lock(fp, user)
            except Locked as e:
                mine = e.details.get("holder") == user and e.details.get("node") == self.node.name
                if not mine or attempt == OWN_LOCK_RETRIES - 1:
                    raise
            await asyncio.sleep(OWN_LOCK_PAUSE)

    async def create(self, user, fp, length, digests, quota=None):
        """A new partial upload under the file's lock: (upload, ticket), or (None, name of
        the server to redirect to) when another server coordinates writes of the file.
        ``quota``, reserved by the caller, becomes the upload's; given back if none is made."""
        node = self.node
        ticket = None
        try:
            ticket = await self._lock(fp, user)
            kind, where = node.route_write(fp, sent_here=True)
            if kind == "redirect":
                node.release(ticket)
                if quota is not None:
                    quota.release()
                return None, where
            existing = ticket.existing
            if (existing is None or existing.deleted) and user != fp.owner:
                raise Forbidden("only the owner creates files in a namespace")
            upload = self.partials.create(user, fp, current_version(ticket), length, digests,
                                          quota.rid if quota is not None else "")
        except BaseException:
            if ticket is not None:
                node.release(ticket)
            if quota is not None:
                quota.release()
            raise
        log.info("resumable upload %s of %s by %s started (length %s)", upload.id, fp.full,
                 user, length if length is not None else "unknown")
        return upload, ticket

    def check_offset(self, upload, offset):
        """OffsetMismatch (409, naming the right one) unless the upload is at ``offset``."""
        current = self.partials.offset(upload)
        if current != offset:
            raise OffsetMismatch(f"the upload is at offset {current}, not {offset}",
                                 headers={"Upload-Offset": str(current)},
                                 expected_offset=current, provided_offset=offset)
        return current

    async def take_over(self, upload):
        """A new request for ``upload`` while an older one still runs (its client gone
        without the connection closing yet): the older one is cut off and waited for."""
        old = self.partials.active.get(upload.id)
        if old is None:
            return
        old.cut_off()
        try:
            await asyncio.wait_for(old.ended.wait(), TAKE_OVER_SECONDS)
        except asyncio.TimeoutError:
            raise UploadBusy("an earlier request of this upload is still running; retry",
                             headers={"Retry-After": "1"}) from None

    async def resume(self, upload, user, offset, quota=None):
        """The file's lock for one more append at ``offset``; UploadOutdated (and the upload
        thrown away) if the file changed since the upload began, or is now coordinated
        elsewhere. The upload is looked at again once the lock is held: a request for it
        that ran meanwhile may have moved its offset, or cancelled it."""
        node, fp = self.node, upload.file_path
        try:
            ticket = await self._lock(fp, user)
        except BaseException:
            if quota is not None:
                quota.keep(offset)
            raise
        try:
            upload = self.partials.get(upload.id, user)
            self.check_offset(upload, offset)
            kind, _where = node.route_write(fp, sent_here=True)
            found = current_version(ticket)
            if found != upload.base_version or kind == "redirect":
                self.cancel(upload)
                why = (f"now at version {found}, not {upload.base_version}"
                       if found != upload.base_version else "now written through another server")
                raise UploadOutdated(f"{fp.full} changed since this upload began ({why}): "
                                     "the partial upload was discarded; start over")
        except BaseException:
            node.release(ticket)
            if quota is not None:
                quota.keep(offset)
            raise
        return upload, ticket

    async def begin(self, upload, ticket, part_digests, cut_off, quota=None):
        """An Append of one request's bytes at the upload's offset, holding ``ticket`` and
        the upload's ``quota`` reservation (None: no quota)."""
        loop = asyncio.get_running_loop()
        try:
            # After a restart the bytes so far are hashed again: off the event loop.
            writer = await loop.run_in_executor(
                None, self.partials.writer, upload, self.node.algorithm)
        except BaseException:
            self.node.release(ticket)
            if quota is not None:
                quota.keep(self.partials.offset(upload))
            raise
        writer.bind(self.node.store)
        return Append(self, upload, writer, ticket, part_digests, cut_off, quota)


class Append:
    """The bytes of one request going into a partial upload, under the file's lock."""

    def __init__(self, uploads, upload, writer, ticket, part_digests, cut_off, quota=None):
        self.uploads = uploads
        self.partials = uploads.partials
        self.node = uploads.node
        self.upload = upload
        self.writer = writer
        self.part_digests = part_digests  # this request's Content-Digest, or None
        # To drop this request's bytes if its own digest is wrong.
        self.hasher_before = writer.hasher.copy() if part_digests is not None else None
        self.cut_off = cut_off
        self.quota = quota
        self.lock = HeldLock(self.node, ticket, lambda: writer.size - writer.start, cut_off)
        self.ended = asyncio.Event()
        self.failure = None
        self.completing = False  # the whole file is being put in place: suspend() waits
        self.partials.active[upload.id] = self

    @property
    def offset(self):
        return self.writer.size

    def write(self, chunk):
        """Take the next piece of the body; an awaitable when the quota reservation must
        grow first (a refusal sets ``failure``), else None."""
        if self.failure is not None:
            return None
        if self.quota is not None and self.quota.needs(self.writer.size + len(chunk)):
            return self._write_beyond_reservation(chunk)
        self._write(chunk)
        return None

    async def _write_beyond_reservation(self, chunk):
        try:
            await self.quota.cover(self.writer.size + len(chunk))
        except ApiError as e:
            self.failure = e  # what arrived within the reservation is kept
            return
        self._write(chunk)

    def _write(self, chunk):
        length = self.upload.length
        if length is not None and self.writer.size + len(chunk) > length:
            self.failure = InconsistentLength(
                f"the body goes past the upload's length of {length} bytes")
            chunk = chunk[:length - self.writer.size]
        try:
            self.writer.write(chunk)
        except ApiError as e:  # the disk is full: the writer threw the upload away
            self.failure = e
            return
        if self.part_digests is not None:
            self.part_digests.update(chunk)

    def _check_part(self):
        if self.part_digests is None:
            return
        try:
            self.part_digests.check_others()
        except DigestMismatch:
            self.writer.rewind(self.hasher_before)
            raise

    def suspend(self, why):
        """The request ends without completing the upload: what arrived is kept (durable),
        the lock goes. The offset. Not once the upload is being completed: ``finish`` gives
        the lock back when the file is in place and its record out, not in between."""
        if self.ended.is_set() or self.completing:
            return self.writer.size
        try:
            self.lock.release()
            offset = self.writer.pause()
            if self.writer.discarded:
                return 0
            self.partials.touch(self.upload)
            log.info("resumable upload %s of %s: %d bytes received from offset %d, now at "
                     "%d (%s)", self.upload.id, self.upload.file_path.full,
                     offset - self.writer.start, self.writer.start, offset, why)
            return offset
        finally:
            self._end()

    def _end(self):
        self.partials.active.pop(self.upload.id, None)
        self.ended.set()
        if self.quota is None:
            return
        if self.writer.discarded:
            self.quota.release()
        else:
            self.quota.keep(self.writer.size)  # nothing once committed

    async def finish(self, complete):
        """The request's body is all there: keep it (``complete`` False; the offset) or put
        the whole file in place (the record, and whether a majority confirmed it)."""
        try:
            if self.failure is not None:
                raise self.failure
            self._check_part()
        except BaseException:
            self.suspend("refused")
            raise
        if not complete:
            return self.suspend("part stored")
        try:
            with self.node.finishing.running():
                return await self._complete()
        finally:
            if not self.ended.is_set():
                self.lock.release()
                self._end()

    async def _complete(self):
        upload, writer, node = self.upload, self.writer, self.node
        size = writer.size
        if upload.length is not None and size != upload.length:
            self.suspend("incomplete")
            raise InconsistentLength(f"the upload is complete at {size} bytes, but its length "
                                     f"was declared as {upload.length}")
        # Every byte is here: no minimum rate while the digests, the commit and the copies
        # run, and a client gone meanwhile does not take the lock away (``suspend``).
        self.completing = True
        self.lock.flowing = False
        others = [a for a in upload.digests if a != node.algorithm]
        if others:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(None, writer.whole_file_digests, others)
            for algorithm in others:
                if found[algorithm] != upload.digests[algorithm]:
                    writer.abort()
                    raise DigestMismatch(
                        f"{algorithm} digest of the whole upload is {found[algorithm]}, not "
                        f"{upload.digests[algorithm]} as the client said; the upload was "
                        "discarded")
        digest = writer.commit(upload.digests.get(node.algorithm))  # a failure discards it
        log.info("resumable upload %s of %s complete: %d bytes (%d in the last request)",
                 upload.id, upload.file_path.full, size, size - writer.start)
        self.partials.mark_complete(upload, size)
        ticket = self.lock.ticket
        plan, existing = plan_new_version(node, ticket), ticket.existing
        try:
            loc, confirmed = await node.finish_upload(ticket, digest, size, plan,
                                                      before_publish=self.lock.settle)
        except BaseException:
            self.lock.release()
            raise
        self.lock.take()
        if self.quota is not None:
            self.quota.committed()  # queued after the file's own report
        created = existing is None or existing.deleted
        return loc, confirmed, created
