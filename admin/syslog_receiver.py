"""The admin server's built-in syslog receiver: RFC 5425 (TLS) or plain TCP, RFC 5424 inside.

It appends every well-formed message as one line to the log file and hands the parsed event
to ``on_event`` (the admin server keeps recent events in its database for the GUI). It faces
the network, so input is bounded and distrusted: a frame longer than ``max_frame`` or a
broken octet count closes that connection, a message that does not parse is counted and
logged, and neither ever stops the server.
"""
import inspect
import logging
import re
import ssl
from pathlib import Path

from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.tcpserver import TCPServer

from securifile.common.certnames import subject_identity
from securifile.common.limits import ConnectionGate, ServerLimits, handshake_deadline
from securifile.common.private_files import open_private_append, private_dir
from securifile.common.syslog import SyslogParseError, parse_message

DEFAULT_MAX_FRAME = 64 * 1024
# Log at most this many malformed messages per connection, then only count them.
_MALFORMED_LOGGED_PER_CONNECTION = 5
# Control characters would break one-message-per-line; written like rsyslog does ('#012').
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

log = logging.getLogger("securifile.admin.syslog")


class FramingError(ValueError):
    """The byte stream cannot be split into messages any more; the connection must close."""


class FrameDecoder:
    """Splits a TCP byte stream into syslog messages.

    A frame that starts with a digit is octet-counted (RFC 5425/6587 ``LEN SP MSG``); any
    other is non-transparent, ended by LF (an optional CR before it is removed), as older
    senders do. After ``feed`` returns, ``error`` is set when the stream went wrong; the
    frames before the error are still returned.
    """

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._max_digits = len(str(max_frame))
        self._buf = bytearray()
        self.error = None

    @property
    def pending(self):
        """Whether a frame has begun and not ended."""
        return bool(self._buf)

    def feed(self, data):
        self._buf += data
        buf, pos, frames = self._buf, 0, []
        try:
            while pos < len(buf):
                if 0x30 <= buf[pos] <= 0x39:
                    sp = buf.find(b" ", pos, pos + self._max_digits + 1)
                    if sp == -1:
                        if len(buf) - pos > self._max_digits:
                            raise FramingError(
                                f"bad octet count {bytes(buf[pos:pos + 12])!r}")
                        break
                    digits = bytes(buf[pos:sp])
                    if not digits.isdigit() or digits.startswith(b"0"):
                        raise FramingError(f"bad octet count {digits[:12]!r}")
                    length = int(digits)
                    if length > self.max_frame:
                        raise FramingError(
                            f"frame of {length} octets exceeds the {self.max_frame} limit")
                    if len(buf) < sp + 1 + length:
                        break
                    frames.append(bytes(buf[sp + 1:sp + 1 + length]))
                    pos = sp + 1 + length
                else:
                    lf = buf.find(b"\n", pos)
                    if lf == -1:
                        if len(buf) - pos > self.max_frame:
                            raise FramingError(
                                f"line longer than {self.max_frame} octets without LF")
                        break
                    line = bytes(buf[pos:lf])
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    if line:
                        frames.append(line)
                    pos = lf + 1
        except FramingError as e:
            self.error = e
            pos = len(buf)
        del buf[:pos]
        return frames


def escape_line(raw):
    """The raw message as one log line: control characters as '#' and three octal digits."""
    return _CONTROL.sub(lambda m: b"#%03o" % m.group()[0], raw)


class SyslogReceiver(TCPServer):
    """Receives syslog messages; ``listen(port, "127.0.0.1")`` or ``add_sockets`` to serve.

    ``ssl_options``: an SSLContext for RFC 5425 over TLS. ``allowed_roles``: with TLS, only
    clients whose certificate (from our CA) has one of these roles may send, e.g.
    ``{"node", "admin"}``; the context must then request client certificates.
    ``allowed_names``: with TLS, only certificates with one of these common names (the
    configured servers and the admin server) may send. With a certificate, every message is
    bound to it: its HOSTNAME and every ``server`` parameter of its structured data must be
    the certificate's name, or the message is dropped and counted as forged, so one server
    cannot write records in another's name. ``on_event``
    gets each parsed message as a dict (see ``parse_message``) plus ``peer`` (address) and
    ``peer_name`` (certificate common name or None); it may be a coroutine function.
    """

    def __init__(self, log_path, on_event=None, ssl_options=None, *, allowed_roles=None,
                 allowed_names=None, max_frame=DEFAULT_MAX_FRAME, read_chunk_size=64 * 1024,
                 logger=None, limits=None):
        if (allowed_roles is not None or allowed_names is not None) and ssl_options is None:
            raise ValueError("allowed_roles and allowed_names need TLS (client certificates)")
        super().__init__(ssl_options=ssl_options, max_buffer_size=max_frame + read_chunk_size,
                         read_chunk_size=read_chunk_size)
        self.log_path = Path(log_path)
        self.on_event = on_event
        self.allowed_roles = set(allowed_roles) if allowed_roles is not None else None
        # A set given is shared (the membership adds and removes servers); others are copied.
        self.allowed_names = allowed_names if isinstance(allowed_names, set) or \
            allowed_names is None else set(allowed_names)
        self.max_frame = max_frame
        self.read_chunk_size = read_chunk_size
        self.logger = logger or log
        self.counters = {"connections": 0, "received": 0, "malformed": 0, "framing_errors": 0,
                         "rejected": 0, "forged": 0, "callback_errors": 0,
                         "write_errors": 0, "timeouts": 0}
        self._streams = set()
        # Connections, the TLS handshake, silence and a frame begun but never ended are
        # bounded (common/limits.py): nobody holds the receiver's sockets for free.
        self.limits = limits or ServerLimits()
        self.gate = ConnectionGate(self.limits, "syslog receiver")
        if not self.log_path.parent.exists():
            private_dir(self.log_path.parent)
        self._file = open_private_append(self.log_path)

    def stats(self):
        return dict(self.counters, open_connections=len(self._streams),
                    refused_connections=self.gate.refused)

    def reopen(self):
        """Reopen the log file (after logrotate moved it)."""
        old, self._file = self._file, open_private_append(self.log_path)
        old.close()

    def close(self):
        """Stop listening, drop the open connections, close the log file."""
        self.stop()
        for stream in list(self._streams):
            stream.close()
        self._file.close()

    async def handle_stream(self, stream, address):
        peer = address[0] if isinstance(address, tuple) else str(address)
        if not self.gate.admit(stream, address):
            return
        self.counters["connections"] += 1
        self._streams.add(stream)
        state = {"peer": peer, "peer_name": None, "malformed_logged": 0, "forged_logged": 0}
        try:
            if self.ssl_options is not None and not await self._admit(stream, state):
                return
            decoder = FrameDecoder(self.max_frame)
            frame_deadline = None
            while True:
                data = await self._read(stream, frame_deadline, state)
                if data is None:
                    return
                frames = decoder.feed(data)
                if not decoder.pending:
                    frame_deadline = None
                elif frame_deadline is None or frames:
                    frame_deadline = IOLoop.current().time() + self.limits.body_timeout
                if frames:
                    await self._deliver(frames, state)
                if decoder.error is not None:
                    self.counters["framing_errors"] += 1
                    self.logger.warning("syslog from %s: %s; closing the connection",
                                        peer, decoder.error)
                    return
        except StreamClosedError:
            pass
        except Exception:
            self.logger.exception("syslog connection from %s failed", peer)
        finally:
            self.gate.closed()
            self._streams.discard(stream)
            stream.close()

    async def _read(self, stream, frame_deadline, state):
        """The next bytes, or None when the sender stayed silent too long (idle_timeout),
        or left a frame unfinished too long (body_timeout)."""
        deadline = IOLoop.current().time() + self.limits.idle_timeout
        if frame_deadline is not None:
            deadline = min(deadline, frame_deadline)
        try:
            return await gen.with_timeout(
                deadline, stream.read_bytes(self.read_chunk_size, partial=True),
                quiet_exceptions=StreamClosedError)
        except TimeoutError:
            self.counters["timeouts"] += 1
            self.logger.info("syslog from %s: %s; closing the connection", state["peer"],
                             "a frame left unfinished" if frame_deadline is not None
                             and frame_deadline <= deadline else "silent too long")
            return None

    async def _admit(self, stream, state):
        """Finish the TLS handshake and, when roles are required, check the certificate."""
        try:
            await handshake_deadline(stream, self.limits.handshake_timeout)
        except (StreamClosedError, ssl.SSLError, OSError) as e:
            self.counters["rejected"] += 1
            self.logger.info("syslog TLS handshake with %s failed: %s", state["peer"], e)
            return False
        cert = stream.socket.getpeercert() if stream.socket is not None else None
        name, role = subject_identity(cert) if cert else (None, None)
        state["peer_name"] = name
        if self.allowed_roles is not None and role not in self.allowed_roles:
            self.counters["rejected"] += 1
            self.logger.warning("syslog from %s refused: certificate %s (role %s) is not one of %s",
                                state["peer"], name, role, sorted(self.allowed_roles))
            return False
        if self.allowed_names is not None and name not in self.allowed_names:
            self.counters["rejected"] += 1
            self.logger.warning("syslog from %s refused: certificate %s is not a configured "
                                "server", state["peer"], name)
            return False
        return True

    @staticmethod
    def claimed_servers(event):
        """The server names a message speaks for: its HOSTNAME and its ``server`` parameters."""
        names = {event.get("hostname")}
        for params in (event.get("sd") or {}).values():
            if "server" in params:
                names.add(params["server"])
        names.discard(None)
        return names

    async def _deliver(self, frames, state):
        events = []
        for raw in frames:
            try:
                event = parse_message(raw)
            except SyslogParseError as e:
                self.counters["malformed"] += 1
                if state["malformed_logged"] < _MALFORMED_LOGGED_PER_CONNECTION:
                    state["malformed_logged"] += 1
                    self.logger.warning("malformed syslog message from %s: %s (%r)",
                                        state["peer"], e, raw[:120])
                continue
            name = state["peer_name"]
            if name is not None and self.claimed_servers(event) - {name}:
                self.counters["forged"] += 1
                if state["forged_logged"] < _MALFORMED_LOGGED_PER_CONNECTION:
                    state["forged_logged"] += 1
                    self.logger.warning("syslog from %s (certificate %s) speaks for %s: dropped",
                                        state["peer"], name,
                                        sorted(self.claimed_servers(event) - {name}))
                continue
            event["peer"], event["peer_name"] = state["peer"], name
            events.append((raw, event))
        if not events:
            return
        self.counters["received"] += len(events)
        try:
            self._file.write(b"".join(escape_line(raw) + b"\n" for raw, _ in events))
            self._file.flush()
        except (OSError, ValueError) as e:
            self.counters["write_errors"] += 1
            self.logger.error("cannot write syslog file %s: %s", self.log_path, e)
        if self.on_event is None:
            return
        for _, event in events:
            try:
                result = self.on_event(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.counters["callback_errors"] += 1
                self.logger.exception("syslog event handler failed for %r", event["raw"][:120])
