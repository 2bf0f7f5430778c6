"""The server end of a peer's kept channel (``/peer/channel``): one WebSocket per calling
node, opened over the same mutual TLS as every peer route and authenticated once, when it
opens; then each text message is one call and gets one answer.

Why a channel and not one HTTP request per call: a lock or a record is a few hundred bytes,
and Tornado's request path (headers parsed and written, a handler built, routing, metrics)
cost more than the work itself; a message costs about half of that on each side (measured
in docs/PERFORMANCE.md "Peer channels"). Calls and answers are JSON::

    {"id": 7, "op": "lock", "body": {...}}  ->  {"id": 7, "status": 200, "body": {...}}

A call that carries bytes (a small file's copy) is one binary message: the length of its
JSON (4 bytes, big-endian), the JSON, then the bytes (``join_call``, ``split_call``).

An error is answered with its HTTP status and the usual error object as the body, so the
caller sees what the HTTP route would have answered. Ops are the functions of
``nodes/peer_ops.py`` (quick, on the event loop, answered in order); an op that returns an
awaitable is answered when it is done, without holding up the messages after it.
"""
import asyncio
import functools
import inspect
import json
import logging
import weakref

import tornado.websocket

from securifile.common.errors import ApiError, Forbidden
from securifile.common.web import NODE

from . import peer_ops
from .base_handler import NodeHandler
from .channel_frames import split_call

log = logging.getLogger("securifile.channel")

# A message larger than this closes the channel (the caller sends larger batches of records
# over HTTP: one long message would hold up every lock behind it).
MAX_MESSAGE = 2 << 20
_OPEN = weakref.WeakSet()  # the channels open here (closing the HTTP server leaves them)


def close_channels(node):
    """The node stops: close the channels its peers opened to it. Tornado's
    ``close_all_connections`` leaves a WebSocket open, and a call that came after the node
    closed its location map was answered with an internal error (a nemesis run's restart)."""
    for handler in list(_OPEN):
        if handler.node is node:
            handler.stopping = True  # calls still on their way go unanswered (ChannelClosed)
            handler.close()
            handler.on_close()  # its in-flight calls end now, not when the close completes


class ChannelHandler(NodeHandler, tornado.websocket.WebSocketHandler):
    auth = NODE

    def initialize(self, node, authenticator, ops=None, bytes_ops=None):
        super().initialize(node, authenticator)
        self.ops = peer_ops.OPS if ops is None else ops
        self.bytes_ops = peer_ops.BYTES_OPS if bytes_ops is None else bytes_ops
        self._tasks = set()
        self.stopping = False

    @property
    def max_message_size(self):
        return MAX_MESSAGE

    def open(self):
        # Each answer goes out as it is written. With Nagle's algorithm on (Tornado's
        # default for a WebSocket), an answer written while an earlier one still waited for
        # the caller's ACK was held back until that ACK came: 16 clients' small uploads at
        # r=2 ran 240-262 a second, p99 121-126 ms, against 263-274 and 103-124 without it
        # (docs/PERFORMANCE.md, "The peer channel's answers without Nagle's delay").
        self.set_nodelay(True)
        _OPEN.add(self)

    def on_message(self, message):
        if self.stopping:
            return
        call_id = None
        try:
            try:
                if isinstance(message, bytes):  # a call with bytes: see split_call
                    call, data = split_call(message)
                    call_id = call["id"]
                    op, body = self.bytes_ops[call["op"]], call["body"]
                    op = functools.partial(op, data=data)
                else:
                    call = json.loads(message)
                    call_id = call["id"]
                    op, body = self.ops[call["op"]], call["body"]
            except (ValueError, KeyError, TypeError):
                raise ApiError("a call is {id, op, body} with a known op",
                               code="bad_message") from None
            if not isinstance(body, dict):
                raise ApiError("a call's body is a JSON object", code="bad_message")
            # The caller was a node of the cluster when the channel opened; the membership
            # may drop it while the channel is open.
            if self.principal.name not in self.authenticator.node_names:
                raise Forbidden("this endpoint is for the cluster's nodes only",
                                code="not_a_node")
            result = op(self.node, self.principal.name, body)
        except Exception as e:  # noqa: BLE001 - every call gets its answer
            self._answer(call_id, error=e)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._call_done(call_id, t))
        else:
            self._answer(call_id, result)

    def _call_done(self, call_id, task):
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        self._answer(call_id, None if error else task.result(), error)

    def _answer(self, call_id, body=None, error=None):
        if error is None:
            answer = {"id": call_id, "status": 200, "body": body}
        elif isinstance(error, ApiError):
            answer = {"id": call_id, "status": error.status, "body": json.loads(error.to_json())}
        else:
            log.error("peer call from %s failed", self.principal.name,
                      exc_info=(type(error), error, error.__traceback__))
            answer = {"id": call_id, "status": 500,
                      "body": {"error": {"code": "internal", "message": "internal error"}}}
        try:
            sent = self.write_message(json.dumps(answer))
        except tornado.websocket.WebSocketClosedError:
            return  # the caller is gone: its deadline, or its channel's close, tells it
        sent.add_done_callback(_retrieve)

    def on_close(self):
        _OPEN.discard(self)
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()


def _retrieve(future):
    if not future.cancelled():
        future.exception()  # an answer the closed channel could not carry: nothing to do

