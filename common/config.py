"""Configuration: one typed object built from a TOML file, then the environment, then flags.

Later sources win. The object is passed explicitly to whatever needs it; nothing reads
configuration from module globals.
"""
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .digests import DEFAULT_ALGORITHM, check_algorithm
from .eventloop import check as check_event_loop

ENV_PREFIX = "SECURIFILE_"


@dataclass(frozen=True)
class ServerEntry:
    """One storage node as every other node and client knows it."""

    name: str
    url: str

    @property
    def host(self):
        return urlsplit(self.url).hostname

    @property
    def port(self):
        return urlsplit(self.url).port


@dataclass
class Config:
    """Everything a node, the launcher or a client needs to know about the cluster."""

    servers: list = field(default_factory=list)
    replicas: int = 1
    tls: bool = True
    certs_dir: Path = Path("certs")
    data_dir: Path = Path("var")
    digest: str = DEFAULT_ALGORITHM
    heartbeat_interval: float = 1.0
    heartbeat_misses: int = 3
    peer_timeout: float = 10.0
    challenge_timeout: float = 60.0  # a verification that takes longer fails the peer
    lock_lease_seconds: float = 30.0
    # An upload slower than this (bytes a second, judged at every lock renewal) is cut off and
    # its lock given back; 0: no minimum. At most this many uploads per user per node (0: any).
    min_upload_rate: float = 4096.0
    max_uploads_per_user: int = 16
    # Resumable uploads: a partial upload untouched this long is swept; at most this many
    # unfinished ones per user per node (0: any number).
    partial_upload_hours: float = 24.0
    max_partial_uploads_per_user: int = 16
    # A holder down or failed this long is replaced by a copy on another running server
    # (HDFS waits about 10 minutes, Ceph 10; a few minutes here). Repairs run every
    # ``repair_interval`` seconds, at most ``repair_batch`` files a round.
    repair_after: float = 300.0
    repair_interval: float = 5.0
    repair_batch: int = 50
    # Integrity: the scrubber re-hashes every copy at these rates (files/s 0: no scrubber)
    # and waits scrub_interval seconds after each complete pass; full reads verify the
    # digest as they stream unless verify_reads is off.
    scrub_bytes_per_second: float = 10e6
    scrub_files_per_second: float = 50.0
    scrub_interval: float = 300.0
    # After each complete pass, files no copy record names (a removal cut short by a kill)
    # are removed once unmodified this many seconds.
    orphan_grace: float = 3600.0
    verify_reads: bool = True
    capacity_bytes: int = 0  # 0: the free space of the data directory's file system
    # Free space of the data directory's file system that no upload or copy may take, so a
    # node filled by users still has room for its databases, logs and the operator.
    reserve_bytes: int = 1 << 30
    # How long an upload's quota reservation lasts without renewal (nodes renew it at a
    # third of this while the body arrives; a node that died holds nothing for longer).
    quota_reservation_seconds: float = 120.0
    max_body_bytes: int = 1 << 40
    event_loop: str = "uvloop"  # or "asyncio", Python's own (common/eventloop.py)
    # What an anonymous client can make a server hold (common/limits.py): the body limit
    # before a streaming file handler raises it after authentication, and fellow servers'
    # JSON bodies; TLS handshake, idle (between requests) and small-body timeouts; open
    # connections per server and per syslog receiver.
    max_json_body_bytes: int = 64 * 1024
    max_peer_body_bytes: int = 64 << 20
    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    body_timeout: float = 30.0
    max_connections: int = 512
    # The admin server (empty admin_url: nodes run without one, owners-only access). With
    # several instances on one PostgreSQL database, ``admin_urls`` lists them all (nodes and
    # clients fail over between them) and ``admin_url`` is where this instance listens.
    admin_url: str = ""
    admin_urls: list = field(default_factory=list)
    database_url: str = ""  # empty: SQLite in DATA_DIR/admin/admin.sqlite3
    syslog_host: str = ""  # empty: the admin server's built-in receiver
    syslog_port: int = 0
    # Receivers to send the audit log to, "host:port", tried in turn (empty: syslog_host or
    # the admin server's host, on syslog_port).
    syslog_targets: list = field(default_factory=list)
    token_ttl_seconds: int = 12 * 3600
    # User certificates are short-lived: the client renews them (securifile renews when less
    # than half of this is left); a removed account's namespace stays sealed this long.
    certificate_seconds: float = 7 * 86400
    removed_namespace_days: float = 30.0  # fractions too (0.0001: under nine seconds)
    # Nodes ask the admin server every ``purge_interval`` seconds for files of removed
    # accounts past that grace period, and delete at most ``purge_batch`` of them a round.
    purge_interval: float = 60.0
    purge_batch: int = 100
    bcrypt_rounds: int = 12
    authz_cache_seconds: float = 3.0
    sample_interval: float = 2.0
    report_interval: float = 1.0
    # Account e-mails: "outbox" writes .eml files to DATA_DIR/admin/outbox; "smtp" sends.
    mail_mode: str = "outbox"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_ca_file: str = ""  # trust for the mail server's certificate; empty: the system's
    mail_from: str = "SecuriFile <no-reply@localhost>"

    def server(self, name):
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(f"no server named {name!r} in the configuration")

    def node_data_dir(self, name):
        return Path(self.data_dir) / "nodes" / name

    @property
    def admin_endpoints(self):
        """Every admin server instance's URL, this configuration's own first."""
        urls = [u.rstrip("/") for u in ([self.admin_url] if self.admin_url else [])]
        return urls + [u.rstrip("/") for u in self.admin_urls if u.rstrip("/") not in urls]

    def syslog_endpoints(self):
        """(host, port) of each audit-log receiver, in the order to try them."""
        if self.syslog_targets:
            return [split_host_port(t) for t in self.syslog_targets]
        if not self.syslog_port:
            return []
        if self.syslog_host:
            return [(self.syslog_host, self.syslog_port)]
        return [(urlsplit(u).hostname, self.syslog_port) for u in self.admin_endpoints]

    @property
    def admin_data_dir(self):
        return Path(self.data_dir) / "admin"

    @property
    def effective_database_url(self):
        return self.database_url or f"sqlite:///{self.admin_data_dir / 'admin.sqlite3'}"

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    def validate(self):
        check_algorithm(self.digest)
        check_event_loop(self.event_loop)
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError("server names must be unique")
        if self.servers and not 0 <= self.replicas <= len(self.servers) - 1:
            raise ValueError(
                f"replicas must be between 0 and n-1 = {len(self.servers) - 1}, not {self.replicas}")
        if self.purge_interval <= 0 or self.purge_batch < 1 or self.removed_namespace_days < 0:
            raise ValueError("purge_interval must be > 0, purge_batch >= 1, "
                             "removed_namespace_days >= 0")
        if self.repair_after < 0 or self.repair_interval <= 0 or self.repair_batch < 1:
            raise ValueError("repair_after must be >= 0, repair_interval > 0, repair_batch >= 1")
        if self.heartbeat_interval <= 0 or self.heartbeat_misses < 1:
            raise ValueError("heartbeat interval must be positive and misses at least 1")
        if self.scrub_files_per_second < 0 or self.scrub_interval < 0 or self.orphan_grace < 0:
            raise ValueError("scrub_files_per_second, scrub_interval and orphan_grace cannot "
                             "be negative")
        if min(self.max_json_body_bytes, self.max_peer_body_bytes, self.max_connections) < 1 \
                or min(self.handshake_timeout, self.idle_timeout, self.body_timeout) <= 0:
            raise ValueError("body limits, connection limit and timeouts must be positive")
        for target in self.syslog_targets:
            split_host_port(target)
        if self.reserve_bytes < 0 or self.quota_reservation_seconds <= 0:
            raise ValueError("reserve_bytes cannot be negative; quota_reservation_seconds "
                             "must be positive")
        if self.partial_upload_hours <= 0 or self.max_partial_uploads_per_user < 0:
            raise ValueError("partial_upload_hours must be positive, "
                             "max_partial_uploads_per_user at least 0")
        if self.scrub_files_per_second and self.scrub_bytes_per_second <= 0:
            raise ValueError("scrub_bytes_per_second must be positive while the scrubber runs")
        return self


LISTS = ("admin_urls", "syslog_targets")  # lists of strings; "a,b" in the environment
_SCALARS = {f.name: f for f in dataclasses.fields(Config)
            if f.name != "servers" and f.name not in LISTS}


def split_host_port(text):
    """("host", port) from "host:port" or "[v6]:port"."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"syslog target {text!r} is not host:port")
    return host.strip("[]"), int(port)


def _strings(value):
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return [str(v).strip() for v in value]


def _coerce(name, value):
    kind = _SCALARS[name].type
    if kind is bool or kind == "bool":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if kind in (int, "int"):
        return int(value)
    if kind in (float, "float"):
        return float(value)
    if kind in (Path, "Path"):
        return Path(value)
    return str(value)


def _servers(value):
    if isinstance(value, str):  # environment: "name=url,name=url"
        items = [p.split("=", 1) for p in value.split(",") if p.strip()]
        return [ServerEntry(n.strip(), u.strip()) for n, u in items]
    return [ServerEntry(str(s["name"]), str(s["url"])) for s in value]


def load_config(path=None, env=None, overrides=None):
    """Build a Config from a TOML file, ``SECURIFILE_*`` variables and explicit overrides."""
    env = os.environ if env is None else env
    values = {}
    if path:
        with open(path, "rb") as f:
            values.update(tomllib.load(f))
    not_from_file = set()
    for name in list(_SCALARS) + ["servers", *LISTS]:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
            not_from_file.add(name)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
            not_from_file.add(name)
    unknown = set(values) - set(_SCALARS) - {"servers", *LISTS}
    if unknown:
        raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
    kwargs = {n: _coerce(n, v) for n, v in values.items() if n in _SCALARS}
    kwargs.update({n: _strings(values[n]) for n in LISTS if n in values})
    if not kwargs.get("admin_url") and kwargs.get("admin_urls"):
        kwargs["admin_url"] = kwargs["admin_urls"][0]
    if "servers" in values:
        kwargs["servers"] = _servers(values["servers"])
    cfg = Config(**kwargs)
    if path:  # relative folders in a file are relative to that file; from env or flags, the cwd
        base = Path(path).resolve().parent
        for name in ("certs_dir", "data_dir"):
            folder = getattr(cfg, name)
            if name not in not_from_file and not folder.is_absolute():
                setattr(cfg, name, base / folder)
    return cfg.validate()


def dump_config(cfg):
    """TOML text for a Config, as the launcher writes it for its nodes."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{name} = {value(getattr(cfg, name))}" for name in _SCALARS]
    lines += [f"{name} = [{', '.join(value(v) for v in getattr(cfg, name))}]" for name in LISTS]
    for s in cfg.servers:
        lines += ["", "[[servers]]", f"name = {value(s.name)}", f"url = {value(s.url)}"]
    return "\n".join(lines) + "\n"
