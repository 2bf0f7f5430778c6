"""Database engines and schema upgrades, for SQLite (embedded default) and PostgreSQL."""
import select as selectors
import socket
import time
from datetime import datetime
from importlib.resources import files

from alembic import command
from alembic.config import Config as AlembicConfig
from pg8000.converters import TIMESTAMPTZ
from pg8000.converters import timestamptz_in as pg8000_timestamptz_in
from sqlalchemy import create_engine, event, exc, make_url
from sqlalchemy.orm import sessionmaker

from securifile.common.private_files import private_file

from .coordination import exclusive_connection
from .pgprepared import prepare_statements


def make_engine(url):
    """An engine for ``url``; SQLite gets WAL and foreign keys, as PostgreSQL has them."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            # Password hashes live here: 0600, and SQLite gives its WAL files the same mode.
            private_file(path)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    engine = _server_engine(url)
    # The GUI's reads go through a second pool whose connections are in autocommit: a
    # read-only session then costs its statements alone, without BEGIN and ROLLBACK round
    # trips (each statement of a READ COMMITTED transaction has its own snapshot anyway).
    engine.reading = _server_engine(url, prepared=True, isolation_level="AUTOCOMMIT")
    event.listen(engine, "engine_disposed", lambda _engine: engine.reading.dispose())
    return engine


# A pooled connection unused for this long is pinged (a round trip) before it is handed out;
# one used more recently is only checked for a hang-up its server sent (no round trip).
PING_AFTER_IDLE = 1.0


def _server_engine(url, prepared=False, **options):
    """A pooled engine on a database server; ``prepared``: each statement with parameters
    prepared once per connection (admin/pgprepared.py), for the reads."""
    if "pg8000" not in url:  # another driver: the pool's own ping on every checkout
        return create_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True, **options)
    engine = create_engine(url, pool_size=5, max_overflow=10, **options)

    @event.listens_for(engine, "connect")
    def _tune_pg8000(dbapi_conn, record):
        # pg8000 leaves Nagle on: a statement longer than its 8 KiB buffer (a page's
        # IN (...) of ids) then waits ~40 ms on the server's delayed ACK.
        sock = getattr(dbapi_conn, "_usock", None)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        register = getattr(dbapi_conn, "register_in_adapter", None)
        if register is not None:
            register(TIMESTAMPTZ, timestamptz_in)
        if prepared:
            prepare_statements(dbapi_conn)
        record.info["used"] = time.monotonic()

    event.listen(engine, "checkout", _check_alive)
    event.listen(engine, "checkin", _note_use)
    return engine


def _note_use(_dbapi_conn, record):
    if record is not None:
        record.info["used"] = time.monotonic()


def _check_alive(dbapi_conn, record, _proxy):
    """Hand out only a live connection, as ``pool_pre_ping`` does, without its round trip
    on every checkout (a GUI page used to send three such pings). A server that restarted
    or ended the connection has closed the socket, which then reads as ready (an idle
    connection has nothing to read); after ``PING_AFTER_IDLE`` seconds unused, a ping
    also catches a connection lost silently. The pool replaces a dead one and tries again."""
    sock = getattr(dbapi_conn, "_usock", None)
    if time.monotonic() - record.info.get("used", 0.0) > PING_AFTER_IDLE or sock is None:
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        except Exception as e:
            raise exc.DisconnectionError(f"the connection failed a ping: {e}") from e
    elif _readable(sock):
        raise exc.DisconnectionError("the server closed the connection")
    record.info["used"] = time.monotonic()


def _readable(sock):
    """Whether ``sock`` has something to read (or an end) right now; poll has no limit on
    descriptor numbers, unlike select."""
    poller = selectors.poll()
    poller.register(sock, selectors.POLLIN)
    return bool(poller.poll(0))


def timestamptz_in(text):
    """A timestamptz as PostgreSQL writes it ('2026-11-20 09:30:00.5+00'), read with
    ``fromisoformat``: pg8000's ``strptime`` took half the time of a 200-file page (two
    timestamps a row). What fromisoformat refuses (infinity, years BC) goes to pg8000's."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return pg8000_timestamptz_in(text)


def alembic_config(url):
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(files("securifile.admin").joinpath("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine, revision="head"):
    """Create or upgrade the schema to ``revision`` (Alembic migrations)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        # Two admin server instances starting together: one upgrades, the other waits and
        # then finds the schema current.
        exclusive_connection(connection, "schema")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


class Sessions(sessionmaker):
    """Sessions on ``engine``; ``reading()``: a session for reads alone (on PostgreSQL
    without a transaction: no BEGIN and ROLLBACK round trips), for the GUI's pages."""

    def __init__(self, engine):
        super().__init__(engine, expire_on_commit=False)
        self.reading = sessionmaker(getattr(engine, "reading", engine), expire_on_commit=False)


def session_factory(engine):
    return Sessions(engine)


def reading(sessions):
    """The read-only sessions of ``sessions`` (itself when it has none: a plain sessionmaker)."""
    return getattr(sessions, "reading", sessions)
