"""HTTP transport between nodes (``/peer/...``): heartbeats, challenges and verdicts, locks,
location records, replica copies, and the administrator's offline/online. Node
certificates only (the admin server's for the state change); users never reach these.

Handlers parse, call one StorageNode method, and answer; no protocol logic here.
"""
import json

import tornado.web

from securifile.common.errors import ApiError
from securifile.common.limits import allow_streamed_body
from securifile.common.paths import parse_path
from securifile.common.web import ADMIN_SERVER, NODE

from . import peer_ops
from .base_handler import NodeHandler
from .buffers import SMALL
from .challenge import ChallengeRefused


class HeartbeatHandler(NodeHandler):
    auth = NODE

    def post(self):
        body = self.json_body()
        # In no-TLS mode the caller names itself (behind the cluster secret).
        caller = self.principal.name if self.principal.name != "?" else body.get("from")
        down = body.get("down")
        self.send_json(self.node.heartbeat_answer(caller, body.get("pulled", 0),
                                                  down if isinstance(down, dict) else None))


class ChallengeHandler(NodeHandler):
    """A peer checks this node's copies: answer from the disk (in a thread; it may be long)."""

    auth = NODE

    def initialize(self, node, authenticator, deep):
        super().initialize(node, authenticator)
        self.deep = deep  # re-hash every file rather than trust cached digests

    async def post(self):
        challenge = self.json_body()
        # In no-TLS mode the caller names itself in a header (behind the cluster secret).
        challenger = self.principal.name if self.principal.name != "?" else None
        try:
            answer = await self.node.answer_challenge(challenge, self.deep, challenger)
        except ChallengeRefused as e:
            raise ApiError(str(e), code="challenge_refused") from None
        self.send_json(answer)


class VerdictHandler(NodeHandler):
    auth = NODE

    def post(self):
        body = self.json_body()
        challenger = (self.principal.name if self.principal.name != "?"
                      else body.get("challenger"))
        try:
            hold = float(body.get("hold", 0.0))
        except (TypeError, ValueError):
            raise ApiError("hold must be a number of seconds", code="bad_verdict") from None
        status = self.node.receive_verdict(challenger, bool(body.get("passed")),
                                           str(body.get("detail", "")), hold)
        self.send_json({"status": status})


class LocksHandler(NodeHandler):
    """A coordinating node takes, renews or gives back a write lock here."""

    auth = NODE

    def post(self):
        self.send_json(peer_ops.lock(self.node, self.principal.name, self.json_body()))


class LocationsHandler(NodeHandler):
    auth = NODE

    def get(self):
        try:
            since = int(self.get_query_argument("since", "0"))
            limit = min(int(self.get_query_argument("limit", "1000")), 10000)
            known = {}
            for item in self.get_query_arguments("known"):
                name, lo, hi = item.rsplit(":", 2)
                known[name] = (int(lo), int(hi))
        except ValueError:
            raise ApiError("since and limit are numbers, each known is name:lo:hi",
                           code="bad_query") from None
        # No ``known`` (a node of an earlier version): records exactly as it reads them.
        self.send_json(self.node.changes_since(since, limit, known or None))

    def post(self):
        self.send_json(peer_ops.push_locations(self.node, self.principal.name, self.json_body()))


class RecordHandler(NodeHandler):
    """A peer asks for this node's record of one file (``peer_ops.record``)."""

    auth = NODE

    def post(self):
        self.send_json(peer_ops.record(self.node, self.principal.name, self.json_body()))


@tornado.web.stream_request_body
class ReplicaHandler(NodeHandler):
    """A replica copy arriving from the origin (or a coordinating holder)."""

    auth = NODE

    def initialize(self, node, authenticator, max_body_bytes):
        super().initialize(node, authenticator)
        self.max_body_bytes = max_body_bytes
        self.writer = None  # set before prepare: a 405 is answered without it
        self.failure = None
        self.length = None  # announced

    async def prepare(self):
        await super().prepare()
        self.fp = parse_path(self.path_args[0])
        if self.request.method == "PUT":
            h = self.request.headers
            self.expected = h.get("X-SecuriFile-Digest")
            self.version = int(h.get("X-SecuriFile-Version", "1"))
            algorithm = h.get("X-SecuriFile-Algorithm", self.node.algorithm)
            length = h.get("Content-Length")
            self.length = int(length) if length and length.isdigit() else None
            self.writer = self.node.begin_copy(self.fp, algorithm, self.principal.name,
                                               self.length)
            allow_streamed_body(self.request, self.max_body_bytes)

    def body_sink(self):
        """A big copy is read in place (``common/direct_bodies.py``): this handler is its
        sink, so that a refused write is this request's failure."""
        if self.writer is None or self.length is None or self.length < SMALL:
            return None
        return self

    def space(self):
        return None if self.failure is not None else self.writer.space()

    def filled(self, n):
        self._store(self.writer.filled, n)

    def data_received(self, chunk):
        if self.writer is not None and self.failure is None:
            self._store(self.writer.write, chunk)

    def _store(self, write, what):
        """``write(what)``; a refusal (a full disk) is this request's failure, the rest of
        the body dropped."""
        try:
            write(what)
        except ApiError as e:
            self.failure = e

    async def put(self, _path):
        if self.failure is not None:
            raise self.failure
        # A body cut short never reaches here (the connection closed first); the length is
        # checked anyway. No digest announced (a pipelined copy): the one computed is
        # answered, and the origin compares it with its own.
        publish = self.request.headers.get("X-SecuriFile-Publish")
        if publish is not None:  # a small upload's record, sent with its copy
            try:
                publish = json.loads(publish)
            except ValueError:
                raise ApiError("X-SecuriFile-Publish is not JSON", code="bad_record") from None
        self.send_json(await peer_ops.finish_copy(
            self.node, self.principal.name, self.fp, self.writer, self.expected, self.version,
            self.length, publish))

    def delete(self, _path):
        self.node.check_copy_sender(self.fp, self.principal.name)
        self.node.delete_copy(self.fp, int(self.get_query_argument("version")))
        self.set_status(204)
        self.finish()

    def on_connection_close(self):
        if self.writer is not None:
            self.writer.abort()

    def on_finish(self):
        if self.writer is not None:
            self.writer.abort()


class AdminStateHandler(NodeHandler):
    """The administrator takes this node offline or puts it back online."""

    auth = ADMIN_SERVER

    def post(self):
        state = self.json_body().get("state")
        if state not in ("offline", "online"):
            raise ApiError("state must be 'offline' or 'online'", code="bad_state")
        status = self.node.set_admin_state(state)
        self.send_json({"name": self.node.name, "status": status})
