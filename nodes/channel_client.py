"""The calling end of a peer channel (see ``nodes/channel_handler.py``): one kept WebSocket
per peer, opened through the node's aiohttp session (so over its mutual-TLS context, and
counted as a new connection like any other), carrying many calls at once; answers are
matched to their calls by id.

Failure detection is the same as for a kept HTTP connection: a channel the peer closes or
resets fails every call waiting on it at once (``ChannelClosed``), and the next call opens
a new one; a hung peer costs each call its own deadline (the caller's), and the channel
stays open, because a hung peer that wakes up answers on it (a SIGSTOPped process keeps its
connections). A peer that does not serve channels (an older version during an upgrade)
answers the opening request with an HTTP status: ``ChannelRefused``, and the caller uses
the HTTP route instead.
"""
import asyncio
import itertools
import json

import aiohttp

from .channel_frames import join_call

PATH = "/peer/channel"
MAX_ANSWER = 64 << 20  # an answer may carry a peer's records
MAX_CALL = 1 << 20  # longer calls go over HTTP (the peer closes a channel at 2 MiB)
CLOSE_WAIT = 1.0  # seconds a closing node waits for a peer to answer its close


class ChannelClosed(ConnectionError):
    """The channel broke (the peer closed, restarted or reset it) before the answer."""


class TooLong(Exception):
    """A call too long for a channel (a long batch of records): send it over HTTP."""


class ChannelRefused(Exception):
    """The peer answered the opening request with an HTTP status (no channel route)."""

    def __init__(self, status):
        super().__init__(f"the peer refused a channel: {status}")
        self.status = status


class Channel:
    """One open channel; ``call`` sends a message and waits for its answer."""

    def __init__(self, ws):
        self.ws = ws
        self.closed = False
        self._ids = itertools.count(1)
        self._waiting = {}
        self._reader = asyncio.ensure_future(self._read())

    async def call(self, op, body, data=None):
        """The peer's answer, {"status", "body"}; ChannelClosed if the channel breaks first.
        ``data``: bytes the call carries (a binary message). The caller bounds the wait (a
        cancelled call's answer is dropped when it comes)."""
        if self.closed:
            raise ChannelClosed("the channel is closed")
        call_id = next(self._ids)
        call = {"id": call_id, "op": op, "body": body}
        message = json.dumps(call) if data is None else join_call(call, data)
        if len(message) > MAX_CALL:
            raise TooLong()
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = waiter
        try:
            try:
                if data is None:
                    await self.ws.send_str(message)
                else:
                    await self.ws.send_bytes(message)
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as e:
                self._close()
                raise ChannelClosed(f"sending failed: {e!r}") from None
            return await waiter
        finally:
            self._waiting.pop(call_id, None)

    async def _read(self):
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                answer = json.loads(msg.data)
                waiter = self._waiting.pop(answer.get("id"), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)
        except Exception:  # noqa: BLE001 - whatever broke it, the channel is done
            pass
        finally:
            self._close()

    def _close(self, close_ws=True):
        """Fail every call waiting here; the next call opens a new channel."""
        if self.closed:
            return
        self.closed = True
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ChannelClosed("the peer closed the channel"))
                # Its call may still be sending, and fail on the send instead: retrieved.
                waiter.add_done_callback(_retrieve)
        self._waiting.clear()
        if close_ws and not self.ws.closed:
            asyncio.ensure_future(self.ws.close()).add_done_callback(_retrieve)

    async def close(self):
        """Close it (the node stops), waiting a moment at most for a hung peer's goodbye."""
        self._close(close_ws=False)
        self._reader.cancel()
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                await self.ws.close()
        except (TimeoutError, ConnectionError, aiohttp.ClientError):
            pass


class Channels:
    """The open channels of one node, one per peer base URL, opened when first needed.

    ``open_ws(url)``: a coroutine opening the WebSocket (the PeerClient's session and
    headers). Callers that need a channel while it is being opened share that opening.
    """

    def __init__(self, open_ws, open_timeout):
        self.open_ws = open_ws
        self.open_timeout = open_timeout
        self._open = {}  # base URL -> Channel
        self._opening = {}  # base URL -> Task of its opening

    async def get(self, base):
        """(channel, fresh): an open channel to ``base``; fresh when opened for this call."""
        channel = self._open.get(base)
        if channel is not None and not channel.closed:
            return channel, False
        task = self._opening.get(base)
        if task is None:
            task = asyncio.ensure_future(self._connect(base))
            self._opening[base] = task
            task.add_done_callback(lambda t: self._opened(base, t))
        # One caller's deadline does not cancel the opening others wait on too.
        return await asyncio.shield(task), True

    async def _connect(self, base):
        try:
            async with asyncio.timeout(self.open_timeout):
                ws = await self.open_ws(base + PATH)
        except aiohttp.WSServerHandshakeError as e:
            raise ChannelRefused(e.status) from None
        return Channel(ws)

    def drop(self, base):
        """Close the channel to ``base`` (its waiting calls fail with ChannelClosed, and go
        once more on a new one): a peer back after it was seen down may have left it stuck
        in TCP's retransmission backoff, where a call waits out its deadline."""
        channel = self._open.pop(base, None)
        if channel is not None:
            channel._close()

    def _opened(self, base, task):
        self._opening.pop(base, None)
        if not task.cancelled() and task.exception() is None:
            self._open[base] = task.result()

    async def close(self):
        for task in self._opening.values():
            task.cancel()
        channels, self._open = list(self._open.values()), {}
        for channel in channels:
            await channel.close()


def _retrieve(future):
    if not future.cancelled():
        future.exception()  # a close that failed: the channel is gone either way
