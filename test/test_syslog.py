"""Syslog: RFC 5424 formatting and parsing, the sender, our receiver, and the real rsyslog."""
import asyncio
import datetime
import os
import time
from types import SimpleNamespace

import pytest
from tornado.netutil import bind_sockets

from securifile.admin.syslog_receiver import FrameDecoder, SyslogReceiver, escape_line
from securifile.common.certs import CertificateAuthority, write_cert_and_key
from securifile.common.syslog import (
    LOCAL0, SD_ACCESS, SD_LOSS, SD_RECORD, SD_STATUS, Severity, SyslogParseError,
    access_event, format_message, parse_message, status_event)
from securifile.common.syslog_sender import SyslogSender
from securifile.common.tls import client_context, server_context

from .helpers import wait_for
from .rsyslog import RsyslogDaemon, find_rsyslogd, has_gtls_driver

UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
# Every character RFC 5424 makes us escape, plus non-ASCII and a space.
NASTY_PATH = 'alice/q"uote\\back]slash/grüße ∑.txt'

# Fast reconnects so the tests do not wait for production backoff.
FAST = dict(min_backoff=0.01, max_backoff=0.05)


def run(coro, timeout=15.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate, timeout=5.0, what="condition"):
    """Poll ``predicate`` inside the event loop until it is truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return value


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Our CA, the admin's server certificate and a node's (client) certificate, on disk."""
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create()
    ca.save(root / "ca.crt", root / "ca.key")
    files = SimpleNamespace(ca=root / "ca.crt")
    for name, role in (("admin", "admin"), ("node1", "node")):
        cert, key = ca.issue_server(name, role=role)
        write_cert_and_key(root / f"{name}.crt", root / f"{name}.key", cert, key)
        setattr(files, name, (root / f"{name}.crt", root / f"{name}.key"))
    files.server_ctx = lambda: server_context(*files.admin, files.ca)
    files.node_ctx = lambda: client_context(files.ca, *files.node1)
    return files


async def start_receiver(log_path, port=0, on_event=None, **kw):
    """Our receiver on 127.0.0.1 (``port`` 0: a free one); returns (receiver, events, port).

    ``events`` collects what the receiver hands on, unless ``on_event`` replaces it.
    """
    events = []
    sockets = bind_sockets(port, "127.0.0.1")
    receiver = SyslogReceiver(log_path, on_event=on_event or events.append, **kw)
    receiver.add_sockets(sockets)
    return receiver, events, sockets[0].getsockname()[1]


def unused_port():
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    for s in sockets:
        s.close()
    return port


async def send_raw(port, data):
    """Open a plain TCP connection, write ``data``; returns (reader, writer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def hung_up(reader, timeout=5.0):
    """True once the server has closed the connection (a FIN, or a reset for unread data)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionError:
        return True


def frame(message):
    return b"%d %s" % (len(message), message)


# ------------------------------------------------------------------------------ formatting

def test_header_and_pri():
    assert format_message(Severity.INFO, "ACCESS", None, "hello", timestamp=T0,
                          hostname="node1", app_name="securifile", procid=42) == (
        b"<134>1 2024-05-06T07:08:09.123456Z node1 securifile 42 ACCESS - hello")
    assert format_message(0, "X", facility=0, timestamp=T0).startswith(b"<0>1 ")
    assert format_message(Severity.DEBUG, "X", facility=23, timestamp=T0).startswith(b"<191>1 ")
    assert LOCAL0 == 16
    with pytest.raises(ValueError):
        format_message(8, "X")
    with pytest.raises(ValueError):
        format_message(0, "X", facility=24)


def test_nilvalues_and_no_trailing_space():
    assert format_message(Severity.NOTICE, None) == b"<133>1 - - - - - -"
    assert format_message(Severity.NOTICE, "", {}, "", hostname="", app_name="",
                          procid="") == b"<133>1 - - - - - -"
    parsed = parse_message(b"<133>1 - - - - - -")
    assert (parsed["timestamp"], parsed["hostname"], parsed["app"], parsed["procid"],
            parsed["msgid"], parsed["sd"], parsed["msg"]) == (None, None, None, None, None, {}, "")


def test_timestamps_are_utc_with_microseconds():
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    local = datetime.datetime(2024, 5, 6, 9, 8, 9, 5, tzinfo=plus2)
    assert b" 2024-05-06T07:08:09.000005Z " in format_message(6, "X", timestamp=local)
    naive = datetime.datetime(2024, 5, 6, 7, 8, 9)
    assert b" 2024-05-06T07:08:09.000000Z " in format_message(6, "X", timestamp=naive)


def test_header_fields_are_printable_ascii_and_bounded():
    m = format_message(6, "ID with space", None, "", timestamp=T0, hostname="my host\n",
                       app_name="a" * 60, procid="ü1")
    assert m == b"<134>1 2024-05-06T07:08:09.123456Z my_host_ " + b"a" * 48 + b" _1 ID_with_space -"
    assert parse_message(m)["app"] == "a" * 48


def test_sd_param_values_are_escaped_and_round_trip():
    sd = {SD_ACCESS: {"path": 'a"b\\c]d', "left_out": None, "n": 7}}
    m = format_message(6, "ACCESS", sd, "msg", timestamp=T0)
    assert b'[access@32473 path="a\\"b\\\\c\\]d" n="7"] msg' in m
    assert parse_message(m)["sd"] == {SD_ACCESS: {"path": 'a"b\\c]d', "n": "7"}}


@pytest.mark.parametrize("sd_id", ["", "has space", 'quo"te', "a=b", "br]acket", "x" * 33,
                                   "tab\tid"])
def test_invalid_sd_names_are_refused(sd_id):
    with pytest.raises(ValueError):
        format_message(6, "X", {sd_id: {"a": "1"}})
    with pytest.raises(ValueError):
        format_message(6, "X", {"ok@32473": {sd_id: "1"}})


def test_msg_is_utf8_without_bom_and_cut_on_a_character_boundary():
    m = format_message(6, "X", None, "grüße ∑", timestamp=T0)
    assert m.endswith(" grüße ∑".encode()) and b"\xef\xbb\xbf" not in m
    long = format_message(6, "X", None, "ü" * 10_000, timestamp=T0, max_bytes=1001)
    assert 995 < len(long) <= 1001
    long.decode("utf-8")  # strict: no half character at the end
    assert set(parse_message(long)["msg"]) == {"ü"}


# --------------------------------------------------------------------------------- parsing

RFC_EXAMPLES = [
    # RFC 5424 section 6.5, examples 1 to 4 (BOM written as \ufeff).
    ("<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
     "\ufeff'su root' failed for lonvick on /dev/pts/8",
     dict(facility=4, severity=2, hostname="mymachine.example.com", app="su", procid=None,
          msgid="ID47", sd={}, msg="'su root' failed for lonvick on /dev/pts/8",
          timestamp=datetime.datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC))),
    ("<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
     "%% It's time to make the do-nuts.",
     dict(facility=20, severity=5, procid="8710", msgid=None,
          msg="%% It's time to make the do-nuts.",
          timestamp=datetime.datetime(2003, 8, 24, 12, 14, 15, 3, tzinfo=UTC))),
    ('<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
     '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
     '\ufeffAn application event log entry...',
     dict(sd={"exampleSDID@32473": {"iut": "3", "eventSource": "Application",
                                    "eventID": "1011"}},
          msg="An application event log entry...")),
    ('<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
     '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
     '[examplePriority@32473 class="high"]',
     dict(sd={"exampleSDID@32473": {"iut": "3", "eventSource": "Application",
                                    "eventID": "1011"},
              "examplePriority@32473": {"class": "high"}}, msg="")),
]


@pytest.mark.parametrize("raw,expected", RFC_EXAMPLES)
def test_parses_the_rfc_examples(raw, expected):
    parsed = parse_message(raw.encode())
    for key, value in expected.items():
        assert parsed[key] == value, key


@pytest.mark.parametrize("raw", [
    b"", b"hello world", b"<13>hello", b"<999>1 - - - - - -", b"<13>0 - - - - - -",
    b"<13>1 - - - - -", b"<13>1 - - - - - x", b"<13>1 - - - - - -junk",
    b'<13>1 - - - - - [x a="1"', b'<13>1 - - - - - [x a="1"]junk', b"<13>1 - - - - - [x a=1]",
    b'<13>1 - - - - - [x a="1"][x b="2"]', b'<13>1 - - - - - [x a="unterminated]',
    b"<13>1 2024-13-01T00:00:00Z - - - - -", b"<13>1 2024-01-01T00:00:00 - - - - -",
    b"<13>1 2024-01-01T00:00:00.1234567Z - - - - -", b"<13>1 - h\x01st - - - -",
    b"<13>1 - host\xff - - - -", b"<13>1 - - - - " + b"m" * 33 + b" -",
])
def test_malformed_messages_are_refused(raw):
    with pytest.raises(SyslogParseError):
        parse_message(raw)


def test_unknown_escape_keeps_the_backslash():
    assert parse_message(b'<13>1 - - - - - [x a="c:\\temp"]')["sd"] == {"x": {"a": "c:\\temp"}}


def test_event_helpers():
    e = access_event("alice", "read", NASTY_PATH, "node1", 200, 5)
    assert (e.severity, e.msgid) == (Severity.INFO, "ACCESS")
    assert e.sd == {SD_ACCESS: {"user": "alice", "op": "read", "path": NASTY_PATH,
                                "server": "node1", "result": 200, "bytes": 5}}
    assert access_event("bob", "delete", "alice/x", "node1", 403).severity == Severity.NOTICE
    assert access_event("bob", "write", "alice/x", "node1", 507).severity == Severity.WARNING
    assert access_event("bob", "read", "alice/x", "node1", "ok").severity == Severity.INFO
    s = status_event("node1", "node2", "running", "down", "3 heartbeats missed")
    assert (s.severity, s.msgid) == (Severity.WARNING, "STATUS")
    assert s.sd[SD_STATUS]["subject"] == "node2"
    assert status_event("node1", "node2", "down", "running").severity == Severity.NOTICE
    m = parse_message(format_message(*e))
    assert m["sd"][SD_ACCESS]["path"] == NASTY_PATH and m["msgid"] == "ACCESS"


# --------------------------------------------------------------------------------- framing

def test_frame_decoder_octet_counting_across_chunks_and_lf_framing():
    one, two = b"<13>1 - - - - - - first", "<13>1 - - - - - - zwei ü".encode()
    stream = frame(one) + frame(two) + b"<13>1 - - - - - - lf\r\n\n" + frame(b"x\ny")
    decoder, frames = FrameDecoder(), []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i:i + 1])
    assert frames == [one, two, b"<13>1 - - - - - - lf", b"x\ny"] and decoder.error is None


@pytest.mark.parametrize("data", [b"70000 abc", b"12x <13>", b"0 ", b"01 x", b"1234567890",
                                  b"<13>1" + b"a" * 70_000])
def test_frame_decoder_stops_on_broken_or_oversize_frames(data):
    decoder = FrameDecoder(max_frame=64 * 1024)
    assert decoder.feed(frame(b"<13>1 - - - - - - ok") + data) == [b"<13>1 - - - - - - ok"]
    assert decoder.error is not None


def test_log_lines_escape_control_characters():
    assert escape_line(b"a\nb\r\x00c\td\x7f") == b"a#012b#015#000c\td#177"


# ---------------------------------------------------------------- sender -> our receiver

@pytest.mark.parametrize("tls", [True, False], ids=["tls", "tcp"])
def test_sender_to_receiver(tmp_path, pki, tls):
    log_path = tmp_path / "syslog" / "audit.log"

    async def main():
        receiver, events, port = await start_receiver(
            log_path, ssl_options=pki.server_ctx() if tls else None)
        sender = SyslogSender("127.0.0.1", port, pki.node_ctx() if tls else None,
                              app_name="securifile-node", hostname="node1", procid=77, **FAST)
        sender.start()
        try:
            sender.log(*access_event("alice", "write", NASTY_PATH, "node1", 201, 12345))
            sender.log(*status_event("node1", "node2", "running", "down", "3 missed"))
            sender.log(Severity.INFO, "NOTE", None, "two\nlines")
            await until(lambda: len(events) == 3, what="3 events")
            assert sender.stats() == {"sent": 3, "dropped": 0, "queued": 0, "connected": True}
        finally:
            await sender.close()
            receiver.close()
        return events

    events = run(main())
    access, status, note = events
    ids = [e["sd"].pop(SD_RECORD)["id"] for e in events]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)  # one id a message
    assert access["sd"] == {SD_ACCESS: {"user": "alice", "op": "write", "path": NASTY_PATH,
                                        "server": "node1", "result": "201", "bytes": "12345"}}
    assert (access["facility"], access["severity"], access["msgid"], access["hostname"],
            access["app"], access["procid"]) == (16, 6, "ACCESS", "node1", "securifile-node", "77")
    assert access["msg"] == f"alice write {NASTY_PATH} on node1: 201 (12345 bytes)"
    assert abs(access["timestamp"] - datetime.datetime.now(UTC)) < datetime.timedelta(minutes=1)
    assert status["sd"][SD_STATUS] == {"server": "node1", "subject": "node2", "old": "running",
                                      "new": "down", "detail": "3 missed"}
    assert note["msg"] == "two\nlines"
    assert access["peer"] == "127.0.0.1"
    assert access["peer_name"] == ("node1" if tls else None)
    lines = log_path.read_bytes().splitlines()
    assert len(lines) == 3
    assert [parse_message(line)["sd"] for line in lines[:2]] == [
        dict(access["sd"], **{SD_RECORD: {"id": ids[0]}}),
        dict(status["sd"], **{SD_RECORD: {"id": ids[1]}})]
    assert lines[2].endswith(b" two#012lines")


def test_sender_never_blocks_bounds_its_queue_and_reports_the_loss(tmp_path, pki):
    port = unused_port()  # nothing listens here until the receiver starts below

    async def main():
        sender = SyslogSender("127.0.0.1", port, pki.node_ctx(), hostname="node1", max_queue=10,
                              **FAST)
        sender.start()
        try:
            started = time.monotonic()
            for i in range(1000):
                sender.log(Severity.INFO, "SEQ", {"seq@32473": {"n": i}}, f"message {i}")
            assert time.monotonic() - started < 1.0
            assert sender.stats() == {"sent": 0, "dropped": 990, "queued": 10,
                                      "connected": False}
            receiver, events, _ = await start_receiver(tmp_path / "audit.log", port,
                                                       ssl_options=pki.server_ctx())
            try:
                await until(lambda: len(events) == 11, what="loss notice and 10 messages")
                assert sender.stats() == {"sent": 11, "dropped": 990, "queued": 0,
                                          "connected": True}
            finally:
                receiver.close()
        finally:
            await sender.close(timeout=0.5)
        return events

    notice, *kept = run(main())
    assert notice["msgid"] == "LOSS" and notice["severity"] == Severity.WARNING
    assert notice["sd"][SD_LOSS]["dropped"] == "990"
    assert "990 messages lost" in notice["msg"]
    assert [e["sd"]["seq@32473"]["n"] for e in kept] == [str(i) for i in range(990, 1000)]


def test_sender_reconnects_after_the_receiver_restarts(tmp_path):
    async def main():
        receiver, events, port = await start_receiver(tmp_path / "a.log")
        sender = SyslogSender("127.0.0.1", port, **FAST)
        sender.start()
        try:
            sender.log(Severity.INFO, "ONE", None, "before")
            await until(lambda: events, what="first message")
            receiver.close()  # drops the open connection too
            await until(lambda: not sender.stats()["connected"], what="sender sees the loss")
            sender.log(Severity.INFO, "TWO", None, "while down")
            receiver, events2, _ = await start_receiver(tmp_path / "a.log", port)
            await until(lambda: events2, what="message sent while down")
            assert events2[0]["msgid"] == "TWO"
            assert sender.stats()["dropped"] == 0
            receiver.close()
        finally:
            await sender.close(timeout=0.5)

    run(main())


def test_sender_fails_over_to_the_next_receiver_and_back(tmp_path):
    """Two admin server instances' receivers: the sender uses the first that answers, moves
    to the other when its connection breaks, and each message keeps its record id."""
    async def main():
        first, events1, port1 = await start_receiver(tmp_path / "a.log")
        second, events2, port2 = await start_receiver(tmp_path / "b.log")
        dead = unused_port()
        sender = SyslogSender([("127.0.0.1", dead), ("127.0.0.1", port1),
                               ("127.0.0.1", port2)], None, **FAST)
        sender.start()
        try:
            sender.log(Severity.INFO, "ONE", None, "to the first that answers")
            await until(lambda: events1, what="the message at the first live receiver")
            first.close()  # an instance dies: its connection breaks
            await until(lambda: not sender.stats()["connected"], what="sender sees the loss")
            sender.log(Severity.INFO, "TWO", None, "after the failover")
            await until(lambda: events2, what="the message at the other receiver")
            assert [e["msgid"] for e in events1 + events2] == ["ONE", "TWO"]
            ids = {e["sd"][SD_RECORD]["id"] for e in events1 + events2}
            assert len(ids) == 2
            assert sender.stats()["dropped"] == 0
        finally:
            await sender.close(timeout=0.5)
            second.close()

    run(main())


def test_close_flushes_the_queue_but_keeps_its_deadline(tmp_path):
    async def main():
        receiver, events, port = await start_receiver(tmp_path / "a.log")
        sender = SyslogSender("127.0.0.1", port, **FAST)
        sender.start()
        for i in range(500):
            sender.log(Severity.INFO, "SEQ", None, f"m{i}")
        await sender.close(timeout=5)
        assert sender.stats()["sent"] == 500 and sender.stats()["queued"] == 0
        await until(lambda: len(events) == 500, what="500 messages")
        receiver.close()

        down = SyslogSender("127.0.0.1", unused_port(), **FAST)
        down.start()
        down.log(Severity.INFO, "LOST", None, "nobody listens")
        started = time.monotonic()
        await down.close(timeout=0.3)
        assert time.monotonic() - started < 2
        down.log(Severity.INFO, "LATE", None, "after close")
        assert down.stats() == {"sent": 0, "dropped": 1, "queued": 1, "connected": False}

    run(main())


# ------------------------------------------------------------ the receiver under attack

def test_receiver_survives_garbage_and_oversize_frames(tmp_path):
    good = format_message(6, "GOOD", {"x@32473": {"a": "1"}}, "fine", timestamp=T0)
    handled = []

    def failing_handler(event):
        if event["msgid"] == "BOOM":
            raise RuntimeError("database down")
        handled.append(event)

    async def main():
        receiver, _, port = await start_receiver(tmp_path / "a.log", on_event=failing_handler)
        try:
            # Garbage lines are counted; the connection and the good frames after them live.
            reader, writer = await send_raw(
                port, b"GET / HTTP/1.1\r\n\r\n\x16\x03\x01 binary\xff\n" + frame(b"<13>1 junk")
                + frame(format_message(6, "BOOM", None, "handler fails")) + frame(good))
            await until(lambda: handled, what="the good message")
            assert receiver.counters["malformed"] == 3
            assert receiver.counters["callback_errors"] == 1
            writer.close()

            # A frame that announces more than the limit, or a line without end: hung up.
            for attack in (b"99999999 <13>1", b"70000 <13>1", b"<13>1 - - " + b"a" * 70_000):
                reader, writer = await send_raw(port, frame(good) + attack)
                assert await hung_up(reader)
                writer.close()
            assert receiver.counters["framing_errors"] == 3

            # Still serving.
            sender = SyslogSender("127.0.0.1", port, **FAST)
            sender.start()
            sender.log(Severity.INFO, "AFTER", None, "still alive")
            await until(lambda: handled[-1]["msgid"] == "AFTER", what="message after attacks")
            await sender.close()
            assert receiver.stats()["received"] == 6  # GOOD x4, BOOM, AFTER
        finally:
            receiver.close()

    run(main())
    assert [e["msgid"] for e in handled] == ["GOOD"] * 4 + ["AFTER"]
    assert len((tmp_path / "a.log").read_bytes().splitlines()) == 6


def test_tls_receiver_refuses_plain_text_and_wrong_certificates(tmp_path, pki):
    async def main():
        receiver, events, port = await start_receiver(
            tmp_path / "a.log", ssl_options=pki.server_ctx(), allowed_roles={"node"})
        try:
            reader, writer = await send_raw(port, frame(b"<13>1 - - - - - - clear text"))
            assert await hung_up(reader)
            writer.close()
            await until(lambda: receiver.counters["rejected"] == 1, what="the refusal")

            # No client certificate, or one whose role is not allowed: refused after the
            # handshake, so what they write is never read.
            refusals = 1
            for ctx in (client_context(pki.ca), client_context(pki.ca, *pki.admin)):
                intruder = SyslogSender("127.0.0.1", port, ctx, **FAST)
                intruder.start()
                intruder.log(Severity.INFO, "INTRUDER", None, "must not be logged")
                refusals += 1
                await until(lambda: receiver.counters["rejected"] >= refusals,
                            what="the intruder's refusal")
                await intruder.close(timeout=0.2)
                refusals = receiver.counters["rejected"]

            node = SyslogSender("127.0.0.1", port, pki.node_ctx(), hostname="node1", **FAST)
            node.start()
            node.log(Severity.INFO, "NODE", None, "welcome")
            await until(lambda: events, what="the node's message")
            await node.close()
        finally:
            receiver.close()
        return events

    events = run(main())
    assert [e["msgid"] for e in events] == ["NODE"]
    assert events[0]["peer_name"] == "node1"


def test_a_server_cannot_write_records_in_another_servers_name(tmp_path, pki):
    """The built-in receiver binds HOSTNAME and every ``server`` parameter to the sender's
    certificate; a server certificate of our CA for a name not configured is refused."""
    ca = CertificateAuthority.load(pki.ca, pki.ca.with_name("ca.key"))
    stray_cert, stray_key = ca.issue_server("node9")
    write_cert_and_key(tmp_path / "node9.crt", tmp_path / "node9.key", stray_cert, stray_key)

    async def main():
        receiver, events, port = await start_receiver(
            tmp_path / "audit.log", ssl_options=pki.server_ctx(),
            allowed_roles={"node", "admin"}, allowed_names={"node1", "node2", "admin"})
        try:
            liar = SyslogSender("127.0.0.1", port, pki.node_ctx(), hostname="node2", **FAST)
            liar.start()
            liar.log(*access_event("alice", "delete", "alice/a.txt", "node2", 204))
            await until(lambda: receiver.counters["forged"] == 1, what="the forged HOSTNAME")
            await liar.close()
            node1 = SyslogSender("127.0.0.1", port, pki.node_ctx(), hostname="node1", **FAST)
            node1.start()
            node1.log(*access_event("alice", "delete", "alice/b.txt", "node2", 204))
            node1.log(*status_event("node2", "node3", "running", "failed", "made up"))
            node1.log(*access_event("alice", "read", "alice/c.txt", "node1", 200))
            await until(lambda: events, what="node1's own record")
            await node1.close()
            assert receiver.counters["forged"] == 3
            stray = SyslogSender("127.0.0.1", port, client_context(
                pki.ca, tmp_path / "node9.crt", tmp_path / "node9.key"), hostname="node9", **FAST)
            stray.start()
            stray.log(Severity.INFO, "STRAY", None, "a retired server")
            await until(lambda: receiver.counters["rejected"] >= 1, what="node9's refusal")
            await stray.close(timeout=0.2)
        finally:
            receiver.close()
        return events

    events = run(main())
    assert [(e["msgid"], e["sd"][SD_ACCESS]["path"]) for e in events] == \
        [("ACCESS", "alice/c.txt")]
    lines = (tmp_path / "audit.log").read_bytes().splitlines()
    assert len(lines) == 1 and b"alice/c.txt" in lines[0]


def test_the_audit_log_file_is_private(tmp_path):
    async def main():
        receiver, _events, _port = await start_receiver(tmp_path / "logs" / "audit.log")
        receiver.close()

    run(main())
    assert os.stat(tmp_path / "logs" / "audit.log").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "logs").st_mode & 0o777 == 0o700


def test_a_refusing_receiver_slows_the_sender_down(tmp_path, pki):
    """Accepted, then hung up on (a refused certificate): back off, no tight reconnect loop."""
    async def main():
        receiver, events, port = await start_receiver(
            tmp_path / "a.log", ssl_options=pki.server_ctx(), allowed_roles={"node"})
        sender = SyslogSender("127.0.0.1", port, client_context(pki.ca), **FAST)
        try:
            started = time.monotonic()
            sender.start()
            sender.log(Severity.INFO, "REFUSED", None, "x")
            await until(lambda: receiver.counters["rejected"] >= 6, what="6 attempts")
            # Back-off 0.01 + 0.02 + 0.04 + 0.05 + 0.05 s at least between the 6 attempts.
            assert time.monotonic() - started >= 0.15
        finally:
            await sender.close(timeout=0.2)
            receiver.close()

    run(main())


def test_log_never_raises_even_for_a_bad_message():
    async def main():
        sender = SyslogSender("127.0.0.1", unused_port(), **FAST)
        sender.log(Severity.INFO, "BAD", {"not valid": {"a": "1"}}, "x")
        sender.log(99, "BAD", None, "x")
        assert sender.stats()["dropped"] == 2 and sender.stats()["queued"] == 0
        await sender.close()

    run(main())


# ----------------------------------------------------------------------- the real rsyslog

@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory, pki):
    if find_rsyslogd() is None or not has_gtls_driver():
        if os.environ.get("CI"):
            pytest.fail("rsyslogd is missing in CI: install rsyslog and rsyslog-gnutls")
        pytest.skip("rsyslog or rsyslog-gnutls not installed; scripts/test installs them")
    daemon = RsyslogDaemon(tmp_path_factory.mktemp("rsyslog"), pki.ca, *pki.admin, nodes=["node1"])
    daemon.start()
    yield daemon
    daemon.stop()


def test_rsyslog_receives_our_messages_intact_over_tls(rsyslog, pki):
    sent = [
        access_event("alice", "write", NASTY_PATH, "node1", 201, 12345),
        access_event("bob", "read", "alice/shared/report.pdf", "node2", 403),
        status_event("node1", "node2", "running", "down", "3 heartbeats missed"),
        (Severity.INFO, "NOTE", {"x@32473": {"a": "1"}, "y@32473": {"b": "[2]"}}, "ünïcode"),
    ]

    async def main():
        sender = SyslogSender("127.0.0.1", rsyslog.port, pki.node_ctx(), "securifile-node",
                              "node1", procid=4242, clock=lambda: T0, **FAST)
        sender.start()
        for e in sent:
            sender.log(*e)
        await sender.close(timeout=5)
        assert sender.stats()["sent"] == len(sent)

    run(main())
    def ours():
        return [line for line in rsyslog.lines() if " securifile-node 4242 " in line]

    lines = wait_for(lambda: len(ours()) >= len(sent) and ours(), timeout=10,
                     what="rsyslog writing the messages")
    # Each message as formatted, with the record id the sender gave it (read back).
    ids = [parse_message(line)["sd"][SD_RECORD]["id"] for line in lines]
    expected = [format_message(severity, msgid, dict(sd or {}, **{SD_RECORD: {"id": i}}), msg,
                               timestamp=T0, hostname="node1", app_name="securifile-node",
                               procid=4242).decode()
                for (severity, msgid, sd, msg), i in zip(sent, ids)]
    assert len(set(ids)) == len(sent)
    assert lines == expected, rsyslog.log()
    parsed = parse_message(lines[0])
    assert parsed["sd"][SD_ACCESS]["path"] == NASTY_PATH
    assert parsed["facility"] == LOCAL0


def test_rsyslog_refuses_a_sender_without_a_certificate(rsyslog, pki):
    async def main():
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", rsyslog.port, ssl=client_context(pki.ca), server_hostname="127.0.0.1")
        writer.write(frame(format_message(6, "NOCERT", None, "must not arrive")))
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except (ConnectionError, OSError):
            pass  # the server's alert
        writer.close()

        sender = SyslogSender("127.0.0.1", rsyslog.port, pki.node_ctx(), **FAST)
        sender.start()
        sender.log(Severity.INFO, "MARKER", None, "after the refusal")
        await sender.close(timeout=5)

    run(main())
    lines = wait_for(lambda: any(" MARKER " in line for line in rsyslog.lines()) and
                     rsyslog.lines(), timeout=10, what="the marker")
    assert not any("NOCERT" in line for line in lines)


def test_rsyslog_accepts_only_the_configured_servers(rsyslog, pki, tmp_path):
    """Every certificate below is from our CA; only node1 (configured) and the admin server
    may write. A user named like a server, and a server not in the list, are refused."""
    ca = CertificateAuthority.load(pki.ca, pki.ca.with_name("ca.key"))
    not_after = datetime.datetime.now(UTC) + datetime.timedelta(days=1)
    intruders = {}
    for name, (cert, key) in {
            "user-admin": ca.issue_user("admin", not_after),
            "user-node1": ca.issue_user("node1", not_after),
            "node7": ca.issue_server("node7")}.items():
        write_cert_and_key(tmp_path / f"{name}.crt", tmp_path / f"{name}.key", cert, key)
        intruders[name] = client_context(pki.ca, tmp_path / f"{name}.crt", tmp_path / f"{name}.key")

    async def main():
        for name, ctx in intruders.items():
            intruder = SyslogSender("127.0.0.1", rsyslog.port, ctx, hostname="node1", **FAST)
            intruder.start()
            intruder.log(Severity.INFO, "FORGED", None, f"written with {name}'s certificate")
            await asyncio.sleep(0.5)
            await intruder.close(timeout=0.2)
        for ctx, who in ((pki.node_ctx(), "node1"), (client_context(pki.ca, *pki.admin), "admin")):
            sender = SyslogSender("127.0.0.1", rsyslog.port, ctx, hostname=who, **FAST)
            sender.start()
            sender.log(Severity.INFO, "GENUINE", None, f"from {who}")
            await sender.close(timeout=5)

    run(main(), timeout=30)
    lines = wait_for(lambda: sum(" GENUINE " in line for line in rsyslog.lines()) >= 2 and
                     rsyslog.lines(), timeout=10, what="the genuine messages")
    assert not any("FORGED" in line for line in lines), lines
    assert any("from admin" in line for line in lines) and any("from node1" in line for line in lines)
