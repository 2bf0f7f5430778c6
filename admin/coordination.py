"""What lets two admin server instances share one database safely.

``insert_once``: an insert that a concurrent or repeated copy of the same row (by a unique
column) turns into nothing; ``upsert``: one that updates the row if it is there. ``exclusive``: a transaction-scoped PostgreSQL advisory lock,
so that a periodic job run by both instances runs one at a time and the second sees what
the first committed; SQLite admits one instance only (the launcher and the admin server
refuse two), so there it locks nothing.
"""
import zlib

from sqlalchemy import text

from .bulk import dialect_insert


def insert_once(session, model, values, unique_column):
    """INSERT ... ON CONFLICT (unique_column) DO NOTHING, for either dialect."""
    return dialect_insert(session, model).values(**values).on_conflict_do_nothing(
        index_elements=[unique_column])


def upsert(session, model, values, key, updated):
    """INSERT ... ON CONFLICT (key) DO UPDATE SET the ``updated`` columns, for either
    dialect: one statement, so two writers at once cannot both find no row and insert it
    (the second failed on the unique key)."""
    return dialect_insert(session, model).values(**values).on_conflict_do_update(
        index_elements=list(key), set_={name: values[name] for name in updated})


def lock_key(name):
    """A stable 31-bit key for an advisory lock named ``name``."""
    return zlib.crc32(f"securifile:{name}".encode()) & 0x7FFFFFFF


def exclusive(session, name):
    """Hold the lock ``name`` until ``session``'s transaction ends (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})


def exclusive_connection(connection, name):
    """The same, for a Core connection's transaction (schema upgrades)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
