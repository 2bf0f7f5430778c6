"""HTTP transport of a storage node: handlers that parse, call StorageNode, map errors.

Each route's class says who may call it (``auth``): users for /files (here), nodes for
/peer (``peer_http``).
"""
import asyncio
import email.utils
import json
from urllib.parse import quote

import tornado.web
from tornado.iostream import StreamClosedError

from securifile.common.digests import repr_digest
from securifile.common.errors import ApiError, Unavailable
from securifile.common.limits import allow_streamed_body
from securifile.common.metrics import MetricsHandler
from securifile.common.paths import file_url, parse_path
from securifile.common.ranges import RangeNotSatisfiable, parse_range
from securifile.common.web import PUBLIC, USER, NotFoundHandler, request_logger

from .access import DELETE, LIST, READ, WRITE
from .base_handler import NodeHandler
from .buffers import ReadBehind
from .channel_handler import ChannelHandler
from .download import CopyCorrupt
from .metrics import NodeMetrics
from .peer_http import (AdminStateHandler, ChallengeHandler, HeartbeatHandler, LocationsHandler,
                        LocksHandler, RecordHandler, ReplicaHandler, VerdictHandler)
from .upload import SMALL_BODY, Redirect

# A refused body is read (and dropped) this far at most; then the connection is closed.
DISCARD_LIMIT = 64 << 20
# A download gives the event loop a turn after this many bytes sent: a write the socket
# takes at once completes without one, and a chunk read from the disk waits on the loop, so
# a big download could hold the loop for its whole length. A 4 GiB one did for seconds: the
# peers missed three heartbeats, marked the serving node down and it lost its majority.
YIELD_EVERY = 4 << 20


class UserHandler(NodeHandler):
    """Shared by the user-facing handlers (/files, /uploads): a node that is not running
    serves nobody; ``authoriser`` says what the caller may do."""

    def initialize(self, node, authenticator, authoriser, max_body_bytes, read_chunk,
                   verify_reads):
        super().initialize(node, authenticator)
        self.authoriser = authoriser
        self.max_body_bytes = max_body_bytes
        self.read_chunk = read_chunk
        self.verify_reads = verify_reads

    def sent_here(self):
        return self.get_query_argument("holder", None) == self.node.name

    def avoided(self):
        """Servers the client could not reach (``avoid=a,b``): not redirect targets now."""
        return {n for n in self.get_query_argument("avoid", "").split(",") if n}

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

    def redirect_to(self, target, fp):
        """307 to the holder ``target``, naming it in the URL so that it serves at once."""
        url = file_url(fp, self.node.urls[target]) + "?holder=" + quote(target)
        self.set_header("Location", url)
        self.send_json({"redirect": url, "file": fp.full}, status=307)


@tornado.web.stream_request_body
class FileHandler(UserHandler):
    """/files/{owner}/{path}: the transport of StorageNode's reads, listings, uploads
    (``nodes/upload.py``) and deletes."""

    auth = USER

    def initialize(self, *args, **kwargs):
        super().initialize(*args, **kwargs)
        # Set before prepare: a method this handler lacks is answered 405 without it, and
        # the answer's cleanup (or the body's sink) looked for them (an AttributeError).
        self.upload = None
        self.failure = None  # a refused upload, answered once its small body is read
        self.redirect_after_body = None
        self.transferred = None

    async def prepare(self):
        try:
            await super().prepare()
            self.node.require_serving()
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

    def _redirect_upload(self, where):
        if self._answer_after_body():
            self.redirect_after_body = where
        else:
            self.redirect_to(where, self.fp)

    def _declared_length(self):
        length = self.request.headers.get("Content-Length")
        if length is not None and not length.isdigit():
            raise ApiError("Content-Length must be a number", code="bad_length")
        return None if length is None else int(length)

    async def _start_upload(self):
        await self.authoriser.check(self.principal, WRITE, self.fp)
        decision = self.node.begin_upload(
            self.fp, self.principal.name, self._declared_length(),
            self.request.headers.get("Content-Digest"), self.sent_here(), self.avoided(),
            self.max_body_bytes, cut_off=lambda: self.request.connection.stream.close())
        if isinstance(decision, Redirect):
            return self._redirect_upload(decision.target)
        allow_streamed_body(self.request, self.max_body_bytes)
        self.upload = decision  # before the lock round: a client gone meanwhile closes it
        where = await self.upload.start(body_first=self._answer_after_body())
        if where is not None:
            self._redirect_upload(where)

    def body_sink(self):
        """An upload's body is read in place (``common/direct_bodies.py``) when it may."""
        if self.upload is None or self.failure is not None or self.redirect_after_body:
            return None
        return self.upload.sink()

    def data_received(self, chunk):
        if self.upload is None or self.failure is not None:
            return None
        if self.upload.failure is not None:
            return self._discard(chunk)
        return self.upload.write(chunk)

    def _discard(self, chunk):
        """A refused body's bytes. The answer waits for the body's end while little of it
        came (a client still sending may miss an early answer and see a reset instead);
        past SMALL_BODY it goes out at once, with ``Connection: close``, which tells a
        client like curl to stop sending, and past DISCARD_LIMIT the connection is closed."""
        self.discarded = getattr(self, "discarded", 0) + len(chunk)
        if self._finished:
            return
        if self.discarded > DISCARD_LIMIT:
            self.request.connection.stream.close()  # on_connection_close cleans up
        elif self.discarded > SMALL_BODY and not self._headers_written:
            e = self.upload.failure
            body = e.to_json().encode()
            self.set_status(e.status)
            self.set_header("Content-Type", "application/json")
            self.set_header("X-SecuriFile-Error", e.code)
            self.set_header("Content-Length", str(len(body)))
            self.set_header("Connection", "close")
            self.write(body)
            self.flush()

    async def put(self, _path):
        if self.failure is not None:
            raise self.failure
        if self._headers_written:  # refused while the body still came: answered already
            return self.finish()
        if self.redirect_after_body is not None:
            return self.redirect_to(self.redirect_after_body, self.fp)
        result = await self.upload.finish()
        if isinstance(result, Redirect):
            return self.redirect_to(result.target, self.fp)
        self.send_json(result.body, status=201 if result.created else 200)

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
        files = await self.node.list_files(fp)
        self.send_json({"owner": fp.owner, "prefix": fp.rel, "files": files})

    async def _send_file(self, head):
        fp = self.fp
        await self.authoriser.check(self.principal, READ, fp)
        read = await self.node.begin_read(fp, self.sent_here(), self.avoided())
        if isinstance(read, Redirect):
            return self.redirect_to(read.target, fp)
        loc, size = read.loc, read.size
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
        behind_read = ReadBehind()
        chunks = iter(read.chunks(start, end, self.read_chunk,
                                  verify=rng is None and self.verify_reads,
                                  behind_read=behind_read))
        # Every TLS record goes out as it is written, as nginx sends a file: with Nagle's
        # algorithm on, the kernel held records back for the client's ACKs, and a 1 GiB
        # download ran about 12% slower for 15% more of the node's CPU (docs/PERFORMANCE.md,
        # "Downloads without Nagle's delay"). Tornado turns it on again when the request ends.
        self.request.connection.stream.set_nodelay(True)
        unyielded = 0
        try:
            while True:
                # A chunk read from the disk in a worker is awaited here, not waited for in
                # the generator: the event loop serves other requests meanwhile.
                await behind_read.ready()
                chunk = next(chunks, None)
                if chunk is None:
                    break
                if not chunk:
                    continue  # its read from the disk is under way: awaited above
                # A view of a reused buffer, sent before the next chunk is read. The first
                # goes with the headers (a copy: RequestHandler.write takes bytes only), the
                # others straight to the connection, which sends them without a copy.
                if not self._headers_written:
                    self.write(bytes(chunk))
                    await self.flush()
                else:
                    await self.request.connection.write(chunk)
                unyielded += len(chunk)
                if unyielded >= YIELD_EVERY:
                    unyielded = 0
                    await asyncio.sleep(0)
        except StreamClosedError:
            return
        except CopyCorrupt:
            # The last chunk is held back: the client sees fewer bytes than Content-Length
            # (a broken transfer, which it retries elsewhere), never a whole wrong file.
            self.transferred = None
            self.broken_off = "the copy does not match its digest"
            self.request.connection.close()
            self._log_access("corrupt")
            await read.quarantine("a full read did not match the digest")
            return
        self.finish()

    def _cleanup(self):
        if self.upload is not None:
            self.upload.close()

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
        upload = self.upload
        op = {"GET": "list" if self.listing else "read", "HEAD": "stat", "DELETE": "delete",
              "PUT": "modify" if upload is not None and upload.existing else "create"}.get(
                  self.request.method, self.request.method.lower())
        if result == 307:
            op += "-redirect"
        size = upload.size if upload is not None and upload.size is not None else self.transferred
        self.node.log_access(principal.name, op, fp.full or fp.owner + "/", result, size)


class StatusHandler(NodeHandler):
    auth = PUBLIC

    def initialize(self, node, authenticator, tls):
        super().initialize(node, authenticator)
        self.tls = tls

    def get(self):
        body = self.node.status()
        body["tls"] = self.tls
        if not self.tls:
            body["warning"] = "ENCRYPTION DISABLED: debug mode, never use in production"
        self.send_json(body)


class OpenApiHandler(NodeHandler):
    auth = PUBLIC

    def initialize(self, node, authenticator, openapi):
        super().initialize(node, authenticator)
        self.openapi = openapi

    def get(self):
        self.send_json(self.openapi)


class NodeMetricsHandler(NodeHandler, MetricsHandler):
    """GET /metrics over this node's registry."""

    def initialize(self, node, authenticator, registry):
        super().initialize(node, authenticator)
        self.registry = registry


class UnknownRouteHandler(NotFoundHandler, NodeHandler):
    """404 ``no_endpoint`` for any path no route matches (dependencies as every handler's)."""


def make_app(node, authenticator, authoriser, tls, max_body_bytes, read_chunk, openapi, deep=False,
             verify_reads=True):
    deps = dict(node=node, authenticator=authenticator)
    files = dict(deps, authoriser=authoriser, max_body_bytes=max_body_bytes, read_chunk=read_chunk,
                 verify_reads=verify_reads)
    metrics = NodeMetrics(node)
    # Imported here: its handlers build on NodeHandler above.
    from .resumable_http import UploadCreationHandler, UploadHandler
    return tornado.web.Application(
        [
            (r"/files/(.+)", FileHandler, files),
            (r"/uploads/([A-Za-z0-9_-]+)", UploadHandler, files),
            (r"/uploads/(.+/.+)", UploadCreationHandler, files),
            (r"/status", StatusHandler, dict(deps, tls=tls)),
            (r"/api/v1/openapi.json", OpenApiHandler, dict(deps, openapi=openapi)),
            (r"/peer/heartbeat", HeartbeatHandler, deps),
            (r"/peer/locations", LocationsHandler, deps),
            (r"/peer/record", RecordHandler, deps),
            (r"/peer/replicas/(.+)", ReplicaHandler, dict(deps, max_body_bytes=max_body_bytes)),
            (r"/peer/admin/state", AdminStateHandler, deps),
            (r"/peer/challenge", ChallengeHandler, dict(deps, deep=deep)),
            (r"/peer/verdict", VerdictHandler, deps),
            (r"/peer/locks", LocksHandler, deps),
            (r"/peer/channel", ChannelHandler, deps),
            (r"/metrics", NodeMetricsHandler, dict(deps, registry=metrics.registry)),
        ],
        log_function=metrics.requests.counting(request_logger(("/peer/", "/metrics"))),
        default_handler_class=UnknownRouteHandler,
        default_handler_args=deps,
        compress_response=False,
    )


def load_openapi():
    from importlib.resources import files
    return json.loads(files("securifile.nodes").joinpath("openapi.json").read_text())
