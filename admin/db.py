"""Database engines and schema upgrades, for SQLite (embedded default) and PostgreSQL."""
import socket
from datetime import datetime
from importlib.resources import files

from alembic import command
from alembic.config import Config as AlembicConfig
from pg8000.converters import TIMESTAMPTZ
from pg8000.converters import timestamptz_in as pg8000_timestamptz_in
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.orm import sessionmaker

from securifile.common.private_files import private_file

from .coordination import exclusive_connection


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
    engine = create_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True)
    if "pg8000" in url:
        @event.listens_for(engine, "connect")
        def _tune_pg8000(dbapi_conn, _record):
            # pg8000 leaves Nagle on: a statement longer than its 8 KiB buffer (a page's
            # IN (...) of ids) then waits ~40 ms on the server's delayed ACK.
            sock = getattr(dbapi_conn, "_usock", None)
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            register = getattr(dbapi_conn, "register_in_adapter", None)
            if register is not None:
                register(TIMESTAMPTZ, timestamptz_in)

    return engine


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


def session_factory(engine):
    return sessionmaker(engine, expire_on_commit=False)
