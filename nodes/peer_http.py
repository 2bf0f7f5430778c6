"""HTTP transport between nodes (``/peer/...``): heartbeats, challenges and verdicts, locks,
location records, replica copies, and the administrator's offline/online. Node
certificates only (the admin server's for the state change); users never reach these.

Handlers parse, call StorageNode (or its parts), and answer; no protocol logic here.
"""
import asyncio

import tornado.web

from securifile.common.digests import ALGORITHMS
from securifile.common.errors import ApiError, Unavailable
from securifile.common.limits import allow_streamed_body
from securifile.common.paths import parse_path
from securifile.common.web import ADMIN_SERVER, NODE, ApiHandler

from .challenge import ChallengeRefused, answer_challenge
from .peers import OFFLINE


class HeartbeatHandler(ApiHandler):
    auth = NODE

    def post(self):
        if self.node.peers.self_status == OFFLINE:
            raise Unavailable(f"{self.node.name} is offline", code="server_offline")
        if self.node.quorum is not None:
            # A node back from a hang learns it was cut off before it answers as running.
            self.node.quorum.has()
        body = self.json_body()
        if body.get("from") in self.node.urls:
            self.node.pulled_by[body["from"]] = int(body.get("pulled", 0))
        self.send_json({"name": self.node.name, "status": self.node.peers.self_status,
                        "seq": self.node.locations.seq, "boot": self.node.boot,
                        "round": self.node.peers.round})


class ChallengeHandler(ApiHandler):
    """A peer checks this node's copies: answer from the disk (in a thread; it may be long)."""

    auth = NODE

    async def post(self):
        challenge = self.json_body()
        # In no-TLS mode the caller names itself in a header (behind the cluster secret).
        challenger = self.principal.name if self.principal.name != "?" else None
        try:
            # What entitles the challenger to a verdict: a challenge, and a failing one only
            # about copies this node holds with it (noted before the disk is read, so that
            # a challenge that times out still lets it fail this node).
            answer = await asyncio.to_thread(answer_challenge, self.node.store,
                                             self.node.locations, challenge, self.deep,
                                             challenger, self.node.peers.note_challenge)
        except ChallengeRefused as e:
            raise ApiError(str(e), code="challenge_refused") from None
        self.send_json(answer)


class VerdictHandler(ApiHandler):
    auth = NODE

    def post(self):
        body = self.json_body()
        self.node.peers.receive_verdict(self.principal.name if self.principal.name != "?"
                                        else body.get("challenger"), bool(body.get("passed")),
                                        str(body.get("detail", "")))
        self.send_json({"status": self.node.peers.self_status})


class LocksHandler(ApiHandler):
    """A coordinating node takes, renews or gives back a write lock here."""

    auth = NODE

    def post(self):
        body = self.json_body()
        fp = parse_path(f"{body.get('owner')}/{body.get('path')}")
        if body.get("release"):
            self.node.locks.release(fp, body.get("token"))
            return self.send_json({"ok": True})
        stamp = body.get("stamp")
        self.send_json(self.node.grant_lock(
            fp, str(body.get("holder")), self.principal.name, str(body.get("token")),
            float(body.get("lease", 30)), int(body.get("known", 0)),
            None if stamp is None else int(stamp)))


class LocationsHandler(ApiHandler):
    auth = NODE

    def get(self):
        since = int(self.get_query_argument("since", "0"))
        limit = min(int(self.get_query_argument("limit", "1000")), 10000)
        records = self.node.locations.changes_since(since, limit)
        self.send_json({"records": records, "seq": self.node.locations.seq, "limit": limit})

    def post(self):
        body = self.json_body()
        records = body.get("records", [])
        self.node.receive_locations(self.principal.name, records, body.get("release", ()))
        self.send_json({"applied": len(records)})


@tornado.web.stream_request_body
class ReplicaHandler(ApiHandler):
    """A replica copy arriving from the origin (or a coordinating holder)."""

    auth = NODE

    async def prepare(self):
        self.writer = None
        self.failure = None
        await super().prepare()
        self.fp = parse_path(self.path_args[0])
        if self.request.method == "PUT":
            h = self.request.headers
            self.expected = h.get("X-SecuriFile-Digest")
            self.version = int(h.get("X-SecuriFile-Version", "1"))
            algorithm = h.get("X-SecuriFile-Algorithm", self.node.algorithm)
            if algorithm not in ALGORITHMS:
                raise ApiError(f"unknown digest algorithm {algorithm}", code="unsupported_digest")
            length = h.get("Content-Length")
            if length and length.isdigit():
                self.node.store.check_room(int(length))
            self.node.check_copy_sender(self.fp, self.principal.name)
            allow_streamed_body(self.request, self.max_body_bytes)
            self.writer = self.node.store.writer(self.fp, algorithm)

    def data_received(self, chunk):
        if self.writer is None or self.failure is not None:
            return
        try:
            self.writer.write(chunk)
        except ApiError as e:
            self.failure = e

    def put(self, _path):
        if self.failure is not None:
            raise self.failure
        # A body cut short never reaches here (the connection closed first); the length is
        # checked anyway. No digest announced (a pipelined copy): the one computed is
        # answered, and the origin compares it with its own.
        length = self.request.headers.get("Content-Length")
        digest = self.writer.commit(self.expected, int(length) if length and length.isdigit()
                                    else None)
        self.node.accept_copy(self.fp, self.version, digest, self.writer.size)
        self.send_json({"server": self.node.name, "digest": digest, "size": self.writer.size})

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


class AdminStateHandler(ApiHandler):
    """The administrator takes this node offline or puts it back online."""

    auth = ADMIN_SERVER

    def post(self):
        state = self.json_body().get("state")
        if state not in ("offline", "online"):
            raise ApiError("state must be 'offline' or 'online'", code="bad_state")
        self.node.set_admin_state(state)
        self.send_json({"name": self.node.name, "status": self.node.peers.self_status})
