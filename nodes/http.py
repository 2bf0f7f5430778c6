"""HTTP transport of a storage node: handlers that parse, call StorageNode, map errors.

Each route's class says who may call it (``auth``): users for /files (here), nodes for
/peer (``peer_http``).
"""
import asyncio
import email.utils
import logging
import json
from urllib.parse import quote

import tornado.web
from tornado.log import access_log
from tornado.ioloop import PeriodicCallback
from tornado.iostream import StreamClosedError

from securifile.common.digests import new_hasher, repr_digest
from securifile.common.errors import ApiError, Unavailable
from securifile.common.limits import allow_streamed_body
from securifile.common.metrics import MetricsHandler
from securifile.common.paths import file_url, parse_path
from securifile.common.ranges import RangeNotSatisfiable, parse_range
from securifile.common.web import PUBLIC, USER, ApiHandler, NotFoundHandler

from .access import DELETE, LIST, READ, WRITE
from .contentdigest import DeclaredDigests
from .metrics import NodeMetrics
from .quarantine import quarantine_if_bad
from .storage import under_replicated
from .peer_http import (AdminStateHandler, ChallengeHandler, HeartbeatHandler, LocationsHandler,
                        LocksHandler, ReplicaHandler, VerdictHandler)
from .upload_limits import ProgressWatch


SMALL_BODY = 1 << 20
log = logging.getLogger("securifile.http")


class CopyCorrupt(Exception):
    """The bytes read from disk do not hash to the record's digest."""


def verified(chunks, hasher, digest):
    """``chunks``, each passed on only once the next one is read, the last only once the
    whole hashes to ``digest``; CopyCorrupt instead of the last chunk otherwise. One chunk
    is held at a time, so memory stays flat."""
    held = None
    for chunk in chunks:
        hasher.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if hasher.hexdigest() != digest:
        raise CopyCorrupt(f"the bytes hash to {hasher.hexdigest()}, not {digest}")
    if held is not None:
        yield held


class NodeHandler(ApiHandler):
    """Shared by the user-facing handlers: a node that is not running serves nobody."""

    def require_running(self):
        self.node.require_serving()

    def sent_here(self):
        return self.get_query_argument("holder", None) == self.node.name

    def avoided(self):
        """Servers the client could not reach (``avoid=a,b``): not redirect targets now."""
        return {n for n in self.get_query_argument("avoid", "").split(",") if n}

    def redirect_to(self, target, fp):
        """307 to the holder ``target``, naming it in the URL so that it serves at once."""
        url = file_url(fp, self.node.urls[target]) + "?holder=" + quote(target)
        self.set_header("Location", url)
        self.send_json({"redirect": url, "file": fp.full}, status=307)


@tornado.web.stream_request_body
class FileHandler(NodeHandler):
    auth = USER

    async def prepare(self):
        self.writer = None
        self.pipeline = None
        self.locking = None  # a small body's lock round, run while its bytes arrive
        self.finished = False
        self.ticket = None
        self.failure = None
        self.redirect_after_body = None
        self.transferred = None
        self.slot = None  # the user whose upload slot this request holds
        try:
            await super().prepare()
            self.require_running()
            raw = self.path_args[0]
            self.listing = self.request.method == "GET" and (raw.endswith("/") or "/" not in raw)
            self.fp = parse_path(raw, allow_folder=self.listing)
            if self.request.method == "PUT":
                await self._start_upload()
        except ApiError as e:
            if self.request.method != "PUT" or not self._answer_after_body():
                raise
            self.failure = e
        if self.failure is not None or self.redirect_after_body is not None:
            # Read a small refused body to its end (and drop it) before answering.
            self.request.connection.set_max_body_size(SMALL_BODY)

    def _answer_after_body(self):
        """Whether a refused upload should be read to its end before the answer goes out.

        A client that did not ask ``Expect: 100-continue`` is already sending; answering
        and closing at once can reset the connection before it reads the answer. A small
        body is cheaper to read than that; a big one is refused at once (curl asks first).
        """
        if self.request.headers.get("Expect", "").lower() == "100-continue":
            return False
        length = self.request.headers.get("Content-Length", "")
        return length.isdigit() and int(length) <= SMALL_BODY

    def _redirect_upload(self, where):
        if self._answer_after_body():
            self.redirect_after_body = where
        else:
            self.redirect_to(where, self.fp)

    async def _start_upload(self):
        fp = self.fp
        self.role = await self.authoriser.check(self.principal, WRITE, fp)
        self.node.locks.check(fp)  # a writer anywhere else: 423 at once, before any redirect
        kind, where = self.node.route_write(fp, self.sent_here(), self.avoided())
        if kind == "redirect":
            return self._redirect_upload(where)
        length = self.request.headers.get("Content-Length")
        if length is not None:
            if not length.isdigit():
                raise ApiError("Content-Length must be a number", code="bad_length")
            if int(length) > self.max_body_bytes:
                raise ApiError(f"file larger than {self.max_body_bytes} bytes", status=413,
                               code="too_large")
            self.node.store.check_room(int(length))
        self.declared = DeclaredDigests.from_header(
            self.request.headers.get("Content-Digest"), self.node.algorithm)
        allow_streamed_body(self.request, self.max_body_bytes)
        self.node.upload_slots.take(self.principal.name)
        self.slot = self.principal.name
        if self._answer_after_body():
            # A small body without 100-continue is on its way already and is answered only
            # once read: the lock round runs while it arrives into a temp file (nothing is
            # committed before put() has the lock); its replicas get the committed copy.
            self.writer = self.node.store.writer(fp, self.node.algorithm)
            self.locking = asyncio.ensure_future(self._take_lock())
            return
        where = await self._take_lock()
        if where is not None:
            return self._redirect_upload(where)
        self.writer = self.node.store.writer(fp, self.node.algorithm)
        # The replicas, chosen now that the lock is held, receive the body as it arrives.
        if length is not None:
            self.pipeline = self.node.open_pipeline(self.plan, int(length), self.declared.own)

    async def _take_lock(self):
        """Take the file's lock from a majority and plan the upload; the coordinator to
        redirect to when the majority's newest record names another one."""
        fp = self.fp
        ticket = await self.node.lock(fp, self.principal.name)
        if self.finished:  # the client went away while the lock round ran
            self.node.release(ticket)
            return None
        self.ticket = ticket
        # The lock brought the majority's newest record: the route may have changed.
        kind, where = self.node.route_write(fp, self.sent_here(), self.avoided())
        if kind == "redirect":
            self._give_back_lock()
            return where
        self.existing = where
        if self.existing is None and self.principal.name != fp.owner:
            self._give_back_lock()
            raise ApiError("only the owner creates files in a namespace", status=403,
                           code="forbidden")
        self.progress = ProgressWatch(self.node.min_upload_rate)
        self.renewal = PeriodicCallback(self._renew_lock, self.node.lock_lease * 1000 / 3)
        self.renewal.start()
        self.plan = self.node.plan_upload(self.ticket)
        return None

    def data_received(self, chunk):
        if self.writer is None or self.failure is not None:
            return None
        try:
            self.writer.write(chunk)
            self.declared.update(chunk)
        except ApiError as e:
            self.failure = e  # answered once the body is drained, in put()
            self._drop_pipeline()
            return None
        if self.pipeline is not None:
            # Awaited by Tornado before it reads on: the slowest replica paces the client.
            return self.pipeline.feed(chunk)
        return None

    async def put(self, _path):
        if self.locking is not None:
            locking, self.locking = self.locking, None
            try:
                where = await locking
            except ApiError as e:
                where, self.failure = None, self.failure or e
            if where is not None and self.failure is None:
                self.redirect_after_body = where
        if self.failure is not None:
            raise self.failure
        if self.redirect_after_body is not None:
            return self.redirect_to(self.redirect_after_body, self.fp)
        try:
            self.declared.check_others()
        except ApiError:
            self.writer.abort()  # gone before the client hears of it (the pipeline too)
            raise
        digest = self.writer.commit(self.declared.own)
        piped = None
        if self.pipeline is not None:
            # Only now, the origin's copy committed under a live lock, do the replicas get
            # the last bytes (and commit theirs).
            self.node.check_held(self.ticket)
            piped = await self.pipeline.finish(digest, max(30.0, self.node.client.timeout))
            self.pipeline = None
        self.renewal.stop()
        ticket, self.ticket = self.ticket, None
        # The record releases the lock on every peer before the answer goes out: the client
        # may write the file again at once.
        try:
            loc, confirmed = await self.node.finish_upload(ticket, digest, self.writer.size,
                                                           self.plan, piped)
        except BaseException:
            self.node.release(ticket)
            raise
        if not confirmed:
            raise Unavailable(f"{self.fp.full} was stored on {self.node.name} but no majority "
                              "confirmed its record: it may or may not last", code="no_quorum")
        body = loc.to_json()
        body["under_replicated"] = under_replicated(loc, self.node.replicas)
        body["replicas_wanted"] = self.node.replicas
        self.send_json(body, status=201 if self.existing is None else 200)

    async def get(self, _path):
        if self.listing:
            return await self._list()
        await self._send_file(head=False)

    async def head(self, _path):
        await self._send_file(head=True)

    async def delete(self, _path):
        await self.authoriser.check(self.principal, DELETE, self.fp)
        if not await self.node.delete(self.fp, self.principal.name):
            raise Unavailable(f"{self.fp.full} was deleted on {self.node.name} but no majority "
                              "confirmed it: it may or may not last", code="no_quorum")
        self.set_status(204)
        self.finish()

    async def _list(self):
        fp = self.fp
        await self.authoriser.check(self.principal, LIST, fp)
        files = [loc.to_json() for loc in self.node.locations.list_prefix(fp.owner, fp.rel)]
        self.send_json({"owner": fp.owner, "prefix": fp.rel, "files": files})

    async def _send_file(self, head):
        fp = self.fp
        await self.authoriser.check(self.principal, READ, fp)
        kind, where = self.node.route_read(fp, self.sent_here(), self.avoided())
        if kind == "redirect":
            return self.redirect_to(where, fp)
        loc = where
        size = self.node.store.size(fp)
        etag = f'"{loc.digest}"'
        self.set_header("ETag", etag)
        self.set_header("Repr-Digest", repr_digest(loc.algorithm, loc.digest))
        self.set_header("X-SecuriFile-Version", str(loc.version))
        self.set_header("X-SecuriFile-Server", self.node.name)
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Last-Modified", email.utils.formatdate(loc.modified, usegmt=True))
        self.set_header("Content-Type", "application/octet-stream")
        if etag in [t.strip() for t in self.request.headers.get("If-None-Match", "").split(",")]:
            self.set_status(304)
            return self.finish()
        try:
            rng = parse_range(self.request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            raise ApiError(f"range not satisfiable: the file has {size} bytes", status=416,
                           code="range_not_satisfiable",
                           headers={"Content-Range": f"bytes */{size}"}) from None
        if rng is not None and self.request.headers.get("If-Range", etag) != etag:
            rng = None
        start, end = rng if rng is not None else (0, size)
        if rng is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.set_header("Content-Length", str(end - start))
        if head:
            return self.finish()
        self.transferred = end - start
        chunks = self.node.store.open_chunks(fp, start, end, self.read_chunk)
        if rng is None and self.verify_reads:
            chunks = verified(chunks, new_hasher(loc.algorithm), loc.digest)
        try:
            for chunk in chunks:
                self.write(chunk)  # one chunk per flush: Tornado sends it without a copy
                await self.flush()
        except StreamClosedError:
            return
        except CopyCorrupt:
            # The last chunk is held back: the client sees fewer bytes than Content-Length
            # (a broken transfer, which it retries elsewhere), never a whole wrong file.
            self.transferred = None
            self.broken_off = "the copy does not match its digest"
            self.request.connection.close()
            self._log_access("corrupt")
            try:
                await quarantine_if_bad(self.node, fp, "a full read did not match the digest")
            except Exception:  # the transfer is broken off already; the scrubber tries again
                logging.getLogger("securifile.node").exception("quarantine of %s failed", fp)
            return
        self.finish()

    async def _renew_lock(self):
        if self.ticket is None:
            return
        if self.writer is not None and self.progress.too_slow(self.writer.size):
            # No lease without progress: a trickled body must not hold the file for ever.
            log.warning("upload of %s by %s slower than %d B/s: cut off", self.fp.full,
                        self.principal.name, self.node.min_upload_rate)
            self.request.connection.stream.close()  # on_connection_close cleans up
            return
        await self.node.renew(self.ticket)

    def _give_back_lock(self):
        if self.ticket is not None:
            if getattr(self, "renewal", None) is not None:
                self.renewal.stop()
            ticket, self.ticket = self.ticket, None
            self.node.release(ticket)

    def _drop_pipeline(self):
        if self.pipeline is not None:
            self.pipeline.abort()
            self.pipeline = None

    def _cleanup(self):
        self.finished = True
        if self.locking is not None:
            # Its lock, if it gets one, is given back as soon as it has it (see _take_lock).
            self.locking.add_done_callback(_retrieve)
            self.locking = None
        if self.writer is not None:
            self.writer.abort()
        self._drop_pipeline()  # the replicas see their bodies cut and keep nothing
        # An upload that failed or broke off: the lock goes (the lease bounds how long it
        # could linger on a peer that does not hear of it).
        self._give_back_lock()
        if self.slot is not None:
            self.node.upload_slots.give_back(self.slot)
            self.slot = None

    def on_finish(self):
        self._cleanup()
        self._log_access(self.get_status())

    def on_connection_close(self):
        # A body that breaks off: the temp file goes, nothing at the file's name changed.
        self._cleanup()
        self._log_access("aborted")

    def _log_access(self, result):
        fp, principal = getattr(self, "fp", None), getattr(self, "principal", None)
        if fp is None or principal is None or getattr(self, "_logged", False):
            return
        self._logged = True
        op = {"GET": "list" if self.listing else "read", "HEAD": "stat", "DELETE": "delete",
              "PUT": "modify" if getattr(self, "existing", None) else "create"}.get(
                  self.request.method, self.request.method.lower())
        if result == 307:
            op += "-redirect"
        size = self.writer.size if self.writer is not None else self.transferred
        self.node.log_access(principal.name, op, fp.full or fp.owner + "/", result, size)


def _retrieve(task):
    if not task.cancelled():
        task.exception()  # a refused lock nobody waits for any more: nothing to report


class StatusHandler(ApiHandler):
    auth = PUBLIC

    def get(self):
        body = self.node.status()
        body["tls"] = self.tls
        if not self.tls:
            body["warning"] = "ENCRYPTION DISABLED: debug mode, never use in production"
        self.send_json(body)


class OpenApiHandler(ApiHandler):
    auth = PUBLIC

    def get(self):
        self.send_json(self.openapi)


def make_app(node, authenticator, authoriser, tls, max_body_bytes, read_chunk, openapi, deep=False,
             verify_reads=True):
    deps = dict(node=node, authenticator=authenticator)
    files = dict(deps, authoriser=authoriser, max_body_bytes=max_body_bytes, read_chunk=read_chunk,
                 verify_reads=verify_reads)
    metrics = NodeMetrics(node)
    return tornado.web.Application(
        [
            (r"/files/(.+)", FileHandler, files),
            (r"/status", StatusHandler, dict(deps, tls=tls)),
            (r"/api/v1/openapi.json", OpenApiHandler, dict(deps, openapi=openapi)),
            (r"/peer/heartbeat", HeartbeatHandler, deps),
            (r"/peer/locations", LocationsHandler, deps),
            (r"/peer/replicas/(.+)", ReplicaHandler, dict(deps, max_body_bytes=max_body_bytes)),
            (r"/peer/admin/state", AdminStateHandler, deps),
            (r"/peer/challenge", ChallengeHandler, dict(deps, deep=deep)),
            (r"/peer/verdict", VerdictHandler, deps),
            (r"/peer/locks", LocksHandler, deps),
            (r"/metrics", MetricsHandler, dict(deps, registry=metrics.registry)),
        ],
        log_function=metrics.requests.counting(log_request),
        default_handler_class=NotFoundHandler,
        default_handler_args=deps,
        compress_response=False,
    )


def log_request(handler):
    """Tornado's access log, without the steady stream of successful peer calls and scrapes."""
    status = handler.get_status()
    if status < 400 and handler.request.path.startswith(("/peer/", "/metrics")):
        return
    broken_off = getattr(handler, "broken_off", None)
    if broken_off:
        access_log.warning("%d %s broken off: %s", status, handler._request_summary(), broken_off)
        return
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(level, "%d %s %.2fms", status, handler._request_summary(),
                   1000.0 * handler.request.request_time())


def load_openapi():
    from importlib.resources import files
    return json.loads(files("securifile.nodes").joinpath("openapi.json").read_text())
