"""The syslog sender: RFC 5424 messages over TCP or TLS (RFC 5425 octet-counting framing,
``LEN SP MSG``) from a queue, never blocking its caller.

Logging must never slow down or fail a user request, so ``SyslogSender.log`` only appends to a
bounded in-memory queue; a background task does the network work, reconnects with capped
backoff, drops the oldest messages when the queue is full, and tells the receiver how many
were lost once it can reach it again.
"""
import asyncio
import collections
import logging
import os
import socket
import ssl
import threading
import time
import uuid

from securifile.common.syslog import (DEFAULT_MAX_MESSAGE_BYTES, LOCAL0, MSGID_LOSS, SD_LOSS, SD_RECORD, Severity,
                                      format_message, format_timestamp, utc_now)

# A connection that lasted this long was healthy: the next reconnect starts at min_backoff.
_HEALTHY_CONNECTION_SECONDS = 1.0

log = logging.getLogger("securifile.syslog")


class SyslogSender:
    """Sends RFC 5424 messages over TCP, or TLS when ``ssl_context`` is given (RFC 5425).

    ``host``, ``port``: one receiver; or ``host`` a list of (host, port) and ``port`` None:
    receivers tried in turn, one at a time, the next when a connection cannot be made or
    breaks (each message has an id in ``SD_RECORD`` so that a receiver can drop a copy).

    ``log()`` is synchronous and O(1): it formats the message and appends it to a bounded
    queue, dropping (and counting) the oldest message when the queue is full. ``start()``
    runs the background task in the current event loop; ``await close()`` flushes what it
    can before a deadline. RFC 5425 has no acknowledgements: what was written just before a
    connection broke may be lost unnoticed, and a batch whose write fails is sent again, so
    rarely a message arrives twice. ``log()`` may also be called from other threads.
    """

    def __init__(self, host, port, ssl_context=None, app_name="securifile", hostname=None,
                 facility=LOCAL0, max_queue=10_000, *, server_hostname=None, procid=None,
                 clock=utc_now, logger=None, connect_timeout=5.0, write_timeout=10.0,
                 min_backoff=0.1, max_backoff=5.0, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
                 batch_bytes=64 * 1024):
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.targets = [(str(h), int(p)) for h, p in host] if port is None \
            else [(str(host), int(port))]
        if not self.targets:
            raise ValueError("no syslog receiver")
        self._target = 0
        self.ssl_context = ssl_context
        self._server_hostname = server_hostname
        self.app_name = app_name
        self.hostname = hostname or socket.gethostname()
        self.facility = facility
        self.procid = os.getpid() if procid is None else procid
        self.max_queue = max_queue
        self.clock = clock
        self.logger = logger or log
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.max_message_bytes = max_message_bytes
        self.batch_bytes = batch_bytes

        self._queue = collections.deque()
        self._sent = 0
        self._dropped = 0
        self._unreported_drops = 0
        self._first_unreported_drop = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._closing = False
        self._task = None
        self._loop = None
        self._loop_thread = None
        self._reader = self._writer = self._watcher = None
        self._peer_closed = False
        self._connected_at = 0.0
        self._outage_logged = False

    @property
    def host(self):
        return self.targets[self._target][0]

    @property
    def port(self):
        return self.targets[self._target][1]

    @property
    def server_hostname(self):
        return self._server_hostname or self.host

    # -- the caller's side: never blocks, never raises for network reasons

    def log(self, severity, msgid, sd=None, msg=""):
        """Queue one message; returns at once whatever the state of the network.

        Never raises: a message that cannot be formatted (an invalid SD-ID is a bug) is
        logged here and counted as dropped, so a user request never fails for logging.
        """
        sd = dict(sd or {}, **{SD_RECORD: {"id": uuid.uuid4().hex}})
        try:
            data = format_message(severity, msgid, sd, msg, facility=self.facility,
                                  timestamp=self.clock(), hostname=self.hostname,
                                  app_name=self.app_name, procid=self.procid,
                                  max_bytes=self.max_message_bytes)
        except Exception:
            self.logger.exception("cannot format syslog message %r; dropped", msgid)
            self._count_drop()
            return
        if self._closing:
            self._count_drop()
            return
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self._count_drop()
        self._queue.append(data)
        self._notify()

    def log_event(self, event):
        """Queue a SyslogEvent, e.g. ``sender.log_event(access_event(...))``."""
        self.log(*event)

    def stats(self):
        return {"sent": self._sent, "dropped": self._dropped, "queued": len(self._queue),
                "connected": self._writer is not None and not self._peer_closed}

    def _count_drop(self):
        self._dropped += 1
        self._unreported_drops += 1
        if self._first_unreported_drop is None:
            self._first_unreported_drop = self.clock()

    def _notify(self):
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass  # the loop is closed: the message stays queued, counted in stats()
        else:
            self._wake.set()

    # -- lifecycle

    def start(self):
        """Start the background task; call from inside the running event loop."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = self._loop.create_task(self._run(), name=f"syslog->{self.host}:{self.port}")

    async def close(self, timeout=2.0):
        """Send what is queued (giving up after ``timeout`` seconds), then disconnect."""
        self._closing = True
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except Exception:  # the deadline passed (or the task failed): stop it
                self._task.cancel()
                try:
                    await self._task
                except (asyncio.CancelledError, Exception):
                    pass
        await self._disconnect()
        if self._queue or self._unreported_drops:
            self.logger.warning("syslog to %s:%s closed with %d messages unsent, %d lost",
                                self.host, self.port, len(self._queue), self._unreported_drops)

    # -- the background task

    def _done(self):
        return self._closing and not self._queue and not self._unreported_drops

    async def _run(self):
        delay = self.min_backoff
        while not self._done():
            try:
                if self._writer is None:
                    try:
                        await self._connect()
                    except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                        self._note_outage(e)
                        await self._pause(delay)
                        delay = min(delay * 2, self.max_backoff)
                        continue
                    if self._outage_logged:
                        self.logger.info("syslog to %s:%s connected again", self.host, self.port)
                        self._outage_logged = False
                if self._peer_closed:
                    raise ConnectionResetError("the receiver closed the connection")
                if not self._queue and not self._unreported_drops:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._send_batch()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                delay = await self._reconnect_later(e, delay)
            except Exception as e:
                # A bug must not end logging for the life of the process.
                self.logger.exception("syslog sender error; reconnecting")
                delay = await self._reconnect_later(e, delay)

    async def _reconnect_later(self, why, delay):
        """Drop the connection and wait before the next attempt; returns the next delay.

        A receiver that accepts and then hangs up at once (a refused certificate) must not
        make us reconnect in a tight loop: only a connection that lived a while resets the
        backoff.
        """
        lived = time.monotonic() - self._connected_at
        await self._disconnect()
        self._target = (self._target + 1) % len(self.targets)  # this one failed: the next
        self._note_outage(why)
        if lived >= _HEALTHY_CONNECTION_SECONDS:
            delay = self.min_backoff
        await self._pause(delay)
        return min(delay * 2, self.max_backoff)

    async def _pause(self, delay):
        if self._closing:
            await asyncio.sleep(delay)  # still flushing: keep trying until close's deadline
            return
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except asyncio.TimeoutError:
            pass

    def _note_outage(self, why):
        if not self._outage_logged:
            self.logger.warning("syslog to %s:%s unreachable (%s); buffering up to %d messages",
                                self.host, self.port, why, self.max_queue)
            self._outage_logged = True

    async def _connect(self):
        """Connect to the receiver that took messages last, else to the next that answers."""
        first = self._target
        for step in range(len(self.targets)):
            self._target = (first + step) % len(self.targets)
            tls = {}
            if self.ssl_context is not None:
                tls = dict(ssl=self.ssl_context, server_hostname=self.server_hostname,
                           ssl_handshake_timeout=self.connect_timeout)
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, **tls), self.connect_timeout)
                break
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                if step == len(self.targets) - 1:
                    self._target = (first + 1) % len(self.targets)  # start there next time
                    raise
        self._peer_closed = False
        self._connected_at = time.monotonic()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(self._reader))

    async def _watch(self, reader):
        """Receivers never speak: EOF or an error here means the connection is gone."""
        try:
            while await reader.read(4096):
                pass
        except (OSError, ssl.SSLError):
            pass
        self._peer_closed = True
        self._wake.set()

    async def _disconnect(self):
        writer, watcher = self._writer, self._watcher
        self._reader = self._writer = self._watcher = None
        self._peer_closed = False
        if watcher is not None:
            watcher.cancel()
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass

    def _loss_notice(self):
        n = self._unreported_drops
        since = format_timestamp(self._first_unreported_drop)
        return format_message(
            Severity.WARNING, MSGID_LOSS,
            {SD_LOSS: {"dropped": n, "since": since, "total": self._dropped}},
            f"syslog: {n} messages lost since {since} (the queue of {self.max_queue} was "
            f"full: receiver unreachable or slow)",
            facility=self.facility, timestamp=self.clock(), hostname=self.hostname,
            app_name=self.app_name, procid=self.procid)

    async def _send_batch(self):
        batch, size = [], 0
        reported = self._unreported_drops
        if reported:
            batch.append(self._loss_notice())
        while self._queue and size < self.batch_bytes:
            m = self._queue.popleft()
            batch.append(m)
            size += len(m)
        first_drop = self._first_unreported_drop
        self._unreported_drops -= reported
        if not self._unreported_drops:
            self._first_unreported_drop = None
        try:
            self._writer.write(b"".join(b"%d %s" % (len(m), m) for m in batch))
            await asyncio.wait_for(self._writer.drain(), self.write_timeout)
        except BaseException:
            self._requeue(batch[1:] if reported else batch, reported, first_drop)
            raise
        self._sent += len(batch)
        if reported:
            self.logger.warning("syslog: reported %d lost messages to %s:%s",
                              reported, self.host, self.port)

    def _requeue(self, messages, reported, first_drop):
        """Put an unsent batch back at the head; if that overflows, its oldest are lost."""
        self._unreported_drops += reported
        if reported:
            self._first_unreported_drop = first_drop
        for m in reversed(messages):
            if len(self._queue) >= self.max_queue:
                self._count_drop()
            else:
                self._queue.appendleft(m)
