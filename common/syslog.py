"""Syslog for the audit trail: RFC 5424 messages, and a sender that never blocks its caller.

Every user file access and every server status change goes to the admin server (or a real
rsyslog) as an RFC 5424 message with structured data, over TCP or TLS with RFC 5425
octet-counting framing (``LEN SP MSG``). Logging must never slow down or fail a user request,
so ``SyslogSender.log`` only appends to a bounded in-memory queue; a background task does the
network work, reconnects with capped backoff, drops the oldest messages when the queue is full,
and tells the receiver how many were lost once it can reach it again.
"""
import asyncio
import collections
import datetime
import enum
import logging
import os
import re
import socket
import ssl
import threading
import time
import uuid
from typing import NamedTuple

from securifile.common.times import utc

NILVALUE = "-"
LOCAL0 = 16
VERSION = 1
# The enterprise number that RFC 5612 reserves for documentation; our SD-IDs carry it.
ENTERPRISE_NUMBER = 32473
SD_ACCESS = f"access@{ENTERPRISE_NUMBER}"
SD_STATUS = f"status@{ENTERPRISE_NUMBER}"
SD_LOSS = f"loss@{ENTERPRISE_NUMBER}"
SD_INTEGRITY = f"integrity@{ENTERPRISE_NUMBER}"
# Every message the sender queues carries a random id here: a receiver that stores messages
# (the admin server's) keeps one row per id, so a batch sent again after a broken
# connection, to the same receiver or to another one, is not recorded twice.
SD_RECORD = f"rec@{ENTERPRISE_NUMBER}"
MSGID_ACCESS = "ACCESS"
MSGID_STATUS = "STATUS"
MSGID_LOSS = "LOSS"
MSGID_INTEGRITY = "INTEGRITY"

# RFC 5425 says receivers SHOULD accept 8192 octets; longer MSG parts are cut to fit.
DEFAULT_MAX_MESSAGE_BYTES = 8192
# A connection that lasted this long was healthy: the next reconnect starts at min_backoff.
_HEALTHY_CONNECTION_SECONDS = 1.0

_HOSTNAME_MAX, _APP_NAME_MAX, _PROCID_MAX, _MSGID_MAX, _SD_NAME_MAX = 255, 48, 128, 32, 32
_BOM = "\ufeff"

log = logging.getLogger("securifile.syslog")


class Severity(enum.IntEnum):
    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


class SyslogParseError(ValueError):
    """The bytes are not an RFC 5424 message."""


class SyslogEvent(NamedTuple):
    """The arguments of ``SyslogSender.log``, so ``sender.log(*access_event(...))`` reads well."""

    severity: int
    msgid: str
    sd: dict
    msg: str


# ---------------------------------------------------------------------------- formatting

def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def format_timestamp(ts):
    """RFC 3339 in UTC with microseconds (RFC 5424 allows at most six fraction digits)."""
    if ts is None:
        return NILVALUE
    ts = utc(ts)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond:06d}Z"


def _header_field(value, max_len):
    """A header field: PRINTUSASCII only (others become '_'), cut to length, '-' when empty."""
    if value is None:
        return NILVALUE
    text = "".join(c if "!" <= c <= "~" else "_" for c in str(value))[:max_len]
    return text or NILVALUE


def _valid_sd_name(name):
    return (isinstance(name, str) and 0 < len(name) <= _SD_NAME_MAX
            and all("!" <= c <= "~" and c not in '=]"' for c in name))


def escape_param_value(value):
    """Escape the three characters RFC 5424 section 6.3.3 requires: '"', '\\' and ']'."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_structured_data(sd):
    """``{sd_id: {name: value}}`` as SD-ELEMENTs; '-' when empty. None values are left out.

    SD-IDs and parameter names come from our code, so an invalid one is a bug: ValueError.
    """
    if not sd:
        return NILVALUE
    parts = []
    for sd_id, params in sd.items():
        if not _valid_sd_name(sd_id):
            raise ValueError(f"invalid SD-ID {sd_id!r}")
        element = [sd_id]
        for name, value in (params or {}).items():
            if not _valid_sd_name(name):
                raise ValueError(f"invalid SD-PARAM name {name!r} in {sd_id}")
            if value is not None:
                element.append(f'{name}="{escape_param_value(value)}"')
        parts.append("[" + " ".join(element) + "]")
    return "".join(parts)


def format_message(severity, msgid, sd=None, msg="", *, facility=LOCAL0, timestamp=None,
                   hostname=None, app_name=None, procid=None,
                   max_bytes=DEFAULT_MAX_MESSAGE_BYTES):
    """One RFC 5424 message as UTF-8 bytes (no BOM, no framing).

    ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [SP MSG]``; missing
    header fields are the NILVALUE '-'. When the whole would exceed ``max_bytes`` the MSG part
    is cut (on a character boundary); the header and structured data are never cut.
    """
    severity, facility = int(severity), int(facility)
    if not 0 <= severity <= 7:
        raise ValueError(f"severity {severity} is not 0..7")
    if not 0 <= facility <= 23:
        raise ValueError(f"facility {facility} is not 0..23")
    head = " ".join([
        f"<{facility * 8 + severity}>{VERSION}",
        format_timestamp(timestamp),
        _header_field(hostname, _HOSTNAME_MAX),
        _header_field(app_name, _APP_NAME_MAX),
        _header_field(procid, _PROCID_MAX),
        _header_field(msgid, _MSGID_MAX),
        format_structured_data(sd),
    ]).encode("utf-8")
    if not msg:
        return head
    body = str(msg).encode("utf-8")
    if max_bytes is not None and len(head) + 1 + len(body) > max_bytes:
        room = max(0, max_bytes - len(head) - 1)
        body = body[:room].decode("utf-8", "ignore").encode("utf-8")
        if not body:
            return head
    return head + b" " + body


# ------------------------------------------------------------------------------- parsing

_HEADER = re.compile(r"<(\d{1,3})>([1-9]\d{0,2}) (\S+) (\S+) (\S+) (\S+) (\S+) ")
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(Z|[+-]\d\d:\d\d)\Z")


def parse_timestamp(text):
    """An RFC 5424 TIMESTAMP as an aware datetime, None for '-'."""
    if text == NILVALUE:
        return None
    m = _TIMESTAMP.match(text)
    if not m:
        raise SyslogParseError(f"bad timestamp {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "0").ljust(6, "0"))
    zone = m.group(8)
    if zone == "Z":
        tz = datetime.timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]),
                                                         minutes=int(zone[4:6])))
    try:
        return datetime.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as e:
        raise SyslogParseError(f"bad timestamp {text[:40]!r}: {e}") from None


def _parse_sd_name(text, pos, what):
    end = pos
    while end < len(text) and text[end] not in ' =]"':
        end += 1
    name = text[pos:end]
    if not _valid_sd_name(name):
        raise SyslogParseError(f"bad {what} {name[:40]!r} at offset {pos}")
    return name, end


def _parse_structured_data(text, pos):
    """SD-ELEMENTs starting at ``pos``: ({sd_id: {name: value}}, position after them)."""
    if text.startswith(NILVALUE, pos):
        return {}, pos + 1
    if not text.startswith("[", pos):
        raise SyslogParseError("structured data is neither '-' nor '['")
    sd = {}
    while pos < len(text) and text[pos] == "[":
        sd_id, pos = _parse_sd_name(text, pos + 1, "SD-ID")
        if sd_id in sd:
            raise SyslogParseError(f"SD-ID {sd_id!r} occurs twice")
        params = sd[sd_id] = {}
        while text.startswith(" ", pos):
            name, pos = _parse_sd_name(text, pos + 1, "SD-PARAM name")
            if not text.startswith('="', pos):
                raise SyslogParseError(f"expected '=\"' after {name!r}")
            pos += 2
            value = []
            while True:
                if pos >= len(text):
                    raise SyslogParseError(f"unterminated value of {name!r}")
                c = text[pos]
                if c == "\\" and pos + 1 < len(text) and text[pos + 1] in '"\\]':
                    value.append(text[pos + 1])
                    pos += 2
                elif c == '"':
                    pos += 1
                    break
                else:
                    # A backslash before any other character is kept as it is (6.3.3).
                    value.append(c)
                    pos += 1
            params[name] = "".join(value)  # a repeated name: the last value wins
        if not text.startswith("]", pos):
            raise SyslogParseError(f"expected ']' to close {sd_id!r}")
        pos += 1
    return sd, pos


def _nil(field, max_len, name):
    if len(field) > max_len or not all("!" <= c <= "~" for c in field):
        raise SyslogParseError(f"bad {name} {field[:40]!r}")
    return None if field == NILVALUE else field


def parse_message(raw):
    """An RFC 5424 message (bytes or str, without framing) as a dict.

    Keys: pri, facility, severity, version, timestamp (aware datetime or None), hostname, app,
    procid, msgid (None for '-'), sd ``{sd_id: {name: value}}``, msg ('' when absent, BOM
    removed), raw (the message as text). Raises SyslogParseError.
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    m = _HEADER.match(text)
    if not m:
        raise SyslogParseError(f"not an RFC 5424 header: {text[:80]!r}")
    pri = int(m.group(1))
    if pri > 191:
        raise SyslogParseError(f"PRI {pri} is out of range")
    sd, pos = _parse_structured_data(text, m.end())
    if pos == len(text):
        msg = ""
    elif text[pos] == " ":
        msg = text[pos + 1:]
        if msg.startswith(_BOM):
            msg = msg[1:]
    else:
        raise SyslogParseError(f"junk after structured data at offset {pos}")
    return {
        "pri": pri,
        "facility": pri >> 3,
        "severity": pri & 7,
        "version": int(m.group(2)),
        "timestamp": parse_timestamp(m.group(3)),
        "hostname": _nil(m.group(4), _HOSTNAME_MAX, "HOSTNAME"),
        "app": _nil(m.group(5), _APP_NAME_MAX, "APP-NAME"),
        "procid": _nil(m.group(6), _PROCID_MAX, "PROCID"),
        "msgid": _nil(m.group(7), _MSGID_MAX, "MSGID"),
        "sd": sd,
        "msg": msg,
        "raw": text,
    }


# ------------------------------------------------------------------------ our event kinds

def access_event(user, op, path, server, result, bytes=None, *, severity=None):
    """A user file access: who, what operation, which owner/path, which server, the result.

    ``result`` is an HTTP status or a word; a failure (status >= 400, or a word other than
    'ok') is logged at NOTICE, a server error (>= 500) at WARNING, success at INFO.
    """
    if severity is None:
        if isinstance(result, int):
            severity = (Severity.WARNING if result >= 500 else
                        Severity.NOTICE if result >= 400 else Severity.INFO)
        else:
            ok = str(result).lower() in ("ok", "success")
            severity = Severity.INFO if ok else Severity.NOTICE
    sd = {SD_ACCESS: {"user": user, "op": op, "path": path, "server": server,
                      "result": result, "bytes": bytes}}
    size = "" if bytes is None else f" ({bytes} bytes)"
    msg = f"{user} {op} {path} on {server}: {result}{size}"
    return SyslogEvent(int(severity), MSGID_ACCESS, sd, msg)


def status_event(server, subject, old, new, detail="", *, severity=None):
    """``server`` saw ``subject`` (a server) go from ``old`` to ``new``, or sent it a challenge.

    Going down or failed is a WARNING, everything else (running, challenge sent, challenge
    passed, offline, online) a NOTICE.
    """
    if severity is None:
        severity = Severity.WARNING if new in ("down", "failed") else Severity.NOTICE
    sd = {SD_STATUS: {"server": server, "subject": subject, "old": old, "new": new,
                      "detail": detail or None}}
    msg = f"{server}: {subject} {old} -> {new}" + (f": {detail}" if detail else "")
    return SyslogEvent(int(severity), MSGID_STATUS, sd, msg)


def integrity_event(server, path, result, detail=""):
    """``server`` found its copy of ``path`` bad and did ``result`` (e.g. 'quarantined');
    a WARNING: a disk is losing data."""
    sd = {SD_INTEGRITY: {"server": server, "path": path, "result": result,
                         "detail": detail or None}}
    msg = f"{server}: copy of {path} {result}" + (f": {detail}" if detail else "")
    return SyslogEvent(int(Severity.WARNING), MSGID_INTEGRITY, sd, msg)


# --------------------------------------------------------------------------------- sender

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
                 clock=_utcnow, logger=None, connect_timeout=5.0, write_timeout=10.0,
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
        The next attempt starts with the next receiver (this one failed a write).

        A receiver that accepts and then hangs up at once (a refused certificate) must not
        make us reconnect in a tight loop: only a connection that lived a while resets the
        backoff.
        """
        lived = time.monotonic() - self._connected_at
        await self._disconnect()
        self._target = (self._target + 1) % len(self.targets)
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
