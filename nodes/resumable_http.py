"""HTTP transport of resumable uploads (draft-ietf-httpbis-resumable-upload): parse the
``Upload-*`` fields, call ``resumable``, map errors.

    POST   /uploads/OWNER/PATH   create (optionally with the first bytes); 201 + Location
    HEAD   /uploads/ID           the offset to resume from (Upload-Offset, Upload-Complete)
    PATCH  /uploads/ID           append at Upload-Offset; Upload-Complete: ?1 ends the upload
    DELETE /uploads/ID           cancel

Only the user who created an upload may see, append to or cancel it (404 for anybody else).
"""

import tornado.web

from securifile.common.errors import ApiError, Unavailable
from securifile.common.limits import allow_streamed_body
from securifile.common.paths import parse_path
from securifile.common.web import USER

from .access import WRITE
from .contentdigest import DeclaredDigests, parse_content_digest
from .http import SMALL_BODY, UserHandler
from .resumable import CompletedUpload, InconsistentLength
from .placement import under_replicated


PARTIAL_UPLOAD = "application/partial-upload"


def sf_boolean(headers, name):
    """A Structured Field boolean (``?1``/``?0``) or None when absent; 400 otherwise."""
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if value not in ("?0", "?1"):
        raise ApiError(f"{name} must be ?1 or ?0, not {value[:20]!r}", code="invalid_header")
    return value == "?1"


def sf_integer(headers, name):
    """A non-negative Structured Field integer, or None when absent; 400 otherwise."""
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 15:
        raise ApiError(f"{name} must be a non-negative integer, not {value[:20]!r}",
                       code="invalid_header")
    return int(value)


@tornado.web.stream_request_body
class _UploadBody(UserHandler):
    """What creation and append share: the body streamed into an ``Append``, kept when the
    connection breaks, and the answer for a part or for the complete file."""

    auth = USER

    def initialize(self, node, authenticator, authoriser, max_body_bytes, read_chunk,
                   verify_reads):
        super().initialize(node, authenticator, authoriser, max_body_bytes, read_chunk,
                           verify_reads)
        self.append = None  # set before prepare: a 405 is answered without it
        self.slot = None
        self.redirect = None  # a creation to send elsewhere once its small body is read
        self.complete = False  # Upload-Complete, once read
        self.gone = False  # answered, or the connection closed
        self.quota = None  # the upload's quota reservation (None: no quota, or not yet)

    async def prepare(self):
        self.failure = None
        try:
            await super().prepare()
            self.node.require_serving()
            await self.start()
        except ApiError as e:
            await self._quota_kept()
            if self.request.method not in ("POST", "PATCH") or not self._answer_after_body():
                raise
            # A small refused body on its way: read (and dropped) before the answer.
            self.failure = e
            self.request.connection.set_max_body_size(SMALL_BODY)

    def _declared(self):
        """(complete, length, this request's Content-Digest checker or None)."""
        h = self.request.headers
        complete = sf_boolean(h, "Upload-Complete")
        if complete is None:
            raise ApiError("Upload-Complete (?1 or ?0) is required", code="missing_header")
        part = h.get("Content-Digest")
        part_digests = DeclaredDigests(parse_content_digest(part), None) if part else None
        return complete, sf_integer(h, "Upload-Length"), part_digests

    def _check_length(self, length, offset, creation=False):
        incoming = self.request.headers.get("Content-Length")
        incoming = int(incoming) if incoming is not None and incoming.isdigit() else None
        self.node.resumable.check_body(length, offset, incoming, self.max_body_bytes, creation)

    def _expected(self, length, offset):
        """The size the file reaches by this request's end, if known: the declared length,
        else the offset plus this request's Content-Length (None: a chunked body)."""
        incoming = self.request.headers.get("Content-Length")
        if length is None and incoming is not None and incoming.isdigit():
            return offset + int(incoming)
        return length

    def _take_slot(self):
        self.node.resumable.take_slot(self.principal.name)
        self.slot = self.principal.name

    def _start_body(self, append):
        self.append = append
        if self.gone:  # the client went away while the lock round ran: let go at once
            return self._cleanup("connection closed")
        allow_streamed_body(self.request, self.max_body_bytes)

    def cut_off(self):
        self.request.connection.stream.close()  # on_connection_close keeps what arrived

    def data_received(self, chunk):
        if self.append is not None:
            return self.append.write(chunk)
        return None

    async def _answer(self, complete):
        if self.failure is not None:
            raise self.failure
        append, upload = self.append, self.append.upload
        try:
            result = await append.finish(complete)
        finally:
            await self._quota_kept()
        self.set_header("Upload-Complete", "?1" if complete else "?0")
        if not complete:
            self._upload_fields(upload, result)
            return None
        loc, confirmed, created = result
        self.set_header("Upload-Offset", str(loc.size))
        if not confirmed:
            raise Unavailable(f"{loc.file_path.full} was stored on {self.node.name} but no "
                              "majority confirmed its record: it may or may not last",
                              code="no_quorum")
        body = loc.to_json()
        body["under_replicated"] = under_replicated(loc, self.node.replicas)
        body["replicas_wanted"] = self.node.replicas
        self.send_json(body, status=201 if created else 200)
        return loc

    async def _quota_kept(self):
        """A request that ends with the upload partial shrinks its reservation to the bytes
        held before it answers: the owner reading their usage next sees the truth."""
        if self.quota is not None:
            await self.quota.kept()

    def _upload_fields(self, upload, offset):
        self.set_header("Upload-Offset", str(offset))
        if upload.length is not None:
            self.set_header("Upload-Length", str(upload.length))
        self.set_header("Upload-Limit", f"max-size={self.max_body_bytes}, "
                                        f"expires={int(self.node.resumable.expires_in(upload))}")
        self.set_header("Cache-Control", "no-store")

    def _cleanup(self, why):
        self.gone = True
        if self.append is not None:
            append, self.append = self.append, None
            append.suspend(why)
        if self.slot is not None:
            self.node.resumable.give_back_slot(self.slot)
            self.slot = None

    def on_finish(self):
        self._cleanup("answered")

    def on_connection_close(self):
        self._cleanup("connection closed")


class UploadCreationHandler(_UploadBody):
    """POST /uploads/OWNER/PATH: a new resumable upload of that file."""

    async def start(self):
        fp = self.fp = parse_path(self.path_args[0])
        await self.authoriser.check(self.principal, WRITE, fp)
        self.node.resumable.check_unlocked(fp)  # a writer anywhere else: 423 at once
        complete, length, part_digests = self._declared()
        self._check_length(length, 0, creation=True)
        whole = self.request.headers.get("Repr-Digest")
        digests = parse_content_digest(whole) if whole else {}
        self._take_slot()
        quota = self.quota = await self.node.resumable.reserve(fp, self._expected(length, 0), 0)
        upload, ticket = await self.node.resumable.create(self.principal.name, fp, length,
                                                          digests, quota)
        if upload is None:  # another server coordinates this file's writes
            self.redirect = self.node.resumable.creation_url(ticket, fp)
            if self._answer_after_body():
                return self.request.connection.set_max_body_size(SMALL_BODY)
            return self._send_redirect()
        self.complete = complete
        self._start_body(await self.node.resumable.begin(upload, ticket, part_digests,
                                                         self.cut_off, quota))

    def _send_redirect(self):
        self.set_header("Location", self.redirect)
        self.send_json({"redirect": self.redirect, "file": self.fp.full}, status=307)

    async def post(self, _path):
        if self.redirect is not None and self.failure is None:
            return self._send_redirect()
        await self._answer(self.complete)
        upload = self.append.upload
        if not self.complete:
            url = self.node.resumable.upload_url(upload.id)
            self.set_header("Location", url)
            self.send_json({"upload": upload.id, "url": url, "offset": self.node.resumable.offset(upload),
                            "length": upload.length, "complete": False}, status=201)


class UploadHandler(_UploadBody):
    """HEAD, PATCH, DELETE /uploads/ID: one upload, for the user who created it."""

    async def start(self):
        upload = self.upload = self.node.resumable.get(self.path_args[0], self.principal.name)
        node = self.node
        if self.request.method == "DELETE":
            await node.resumable.take_over(upload)
        if self.request.method != "PATCH":
            return
        ctype = self.request.headers.get("Content-Type", PARTIAL_UPLOAD).split(";")[0].strip()
        if ctype.lower() not in (PARTIAL_UPLOAD, "application/octet-stream"):
            raise ApiError(f"an append's body is {PARTIAL_UPLOAD}, not {ctype[:60]}",
                           status=415, code="unsupported_media_type")
        await self.authoriser.check(self.principal, WRITE, upload.file_path)
        offset = sf_integer(self.request.headers, "Upload-Offset")
        if offset is None:
            raise ApiError("Upload-Offset is required", code="missing_header")
        complete, length, part_digests = self._declared()
        if upload.complete:
            raise CompletedUpload("this upload is complete already")
        await node.resumable.take_over(upload)
        current = node.resumable.check_offset(upload, offset)
        if length is not None:
            if upload.length is not None and length != upload.length:
                raise InconsistentLength(f"the upload's length is {upload.length}, not {length}")
            if length < current:
                raise InconsistentLength(f"{current} bytes are there already, more than {length}")
        self._check_length(length if length is not None else upload.length, current)
        self._take_slot()
        total = self._expected(length if length is not None else upload.length, current)
        quota = self.quota = await node.resumable.reserve(upload.file_path, total, current,
                                                          upload.reservation)
        upload, ticket = await node.resumable.resume(upload, self.principal.name, current, quota)
        whole = self.request.headers.get("Repr-Digest")
        if whole or (length is not None and upload.length is None):
            node.resumable.declare(upload, length, parse_content_digest(whole) if whole else {})
        self.complete = complete
        self._start_body(await node.resumable.begin(upload, ticket, part_digests, self.cut_off,
                                                    quota))

    async def patch(self, _id):
        if await self._answer(self.complete) is None:
            self.set_status(204)
            self.finish()

    def head(self, _id):
        upload = self.upload
        self.set_header("Upload-Complete", "?1" if upload.complete else "?0")
        self._upload_fields(upload, self.node.resumable.offset(upload))
        self.set_status(204)
        self.finish()

    def delete(self, _id):
        self.node.resumable.cancel(self.upload)
        self.set_status(204)
        self.finish()
