"""Syslog messages for the audit trail: RFC 5424 formatting and parsing, and our event kinds.

Every user file access and every server status change goes to the admin server (or a real
rsyslog) as an RFC 5424 message with structured data. The sender (``syslog_sender``) carries
these messages over TCP or TLS; the admin server's receiver parses them with ``parse_message``.
"""
import datetime
import enum
import functools
import re
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

_HOSTNAME_MAX, _APP_NAME_MAX, _PROCID_MAX, _MSGID_MAX, _SD_NAME_MAX = 255, 48, 128, 32, 32
_BOM = "\ufeff"


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

def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def format_timestamp(ts):
    """RFC 3339 in UTC with microseconds (RFC 5424 allows at most six fraction digits)."""
    if ts is None:
        return NILVALUE
    ts = utc(ts)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond:06d}Z"


@functools.lru_cache(maxsize=256)  # a server's host, app, process and message ids: a few
def _header_field(value, max_len):
    """A header field: PRINTUSASCII only (others become '_'), cut to length, '-' when empty."""
    if value is None:
        return NILVALUE
    text = "".join(c if "!" <= c <= "~" else "_" for c in str(value))[:max_len]
    return text or NILVALUE


@functools.lru_cache(maxsize=1024)  # each message names the same handful again
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
