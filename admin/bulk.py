"""Statements over many rows at once, on SQLite and PostgreSQL.

An executemany INSERT is cheap on SQLite (in-process). With pg8000 it is one statement per
row, each a round trip; with a RETURNING clause SQLAlchemy sends the rows as pages of
multi-row ``INSERT ... VALUES (...), (...)`` instead ("insertmanyvalues"), from one compiled
statement: measured here, 0.11 CPU-ms per row against 0.27 for the executemany and 0.33 for
a multi-row VALUES compiled per call. So on PostgreSQL an INSERT of many rows returns its
key even when nobody reads it. Parameter lists for ``IN`` go in pages, under every limit.
"""
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

PAGE = 400  # keys per IN list: a few hundred parameters


def dialect_insert(session, model):
    """The INSERT of ``session``'s dialect, which has ON CONFLICT (both have the same)."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(model)
    return sqlite_insert(model)


def insert_rows(session, stmt, rows, returning=()):
    """Run the INSERT ``stmt`` for ``rows`` (dicts with the same keys); the ``returning``
    columns of the rows inserted (a row ON CONFLICT DO NOTHING skipped returns none)."""
    if not rows:
        return []
    if returning:
        return session.execute(stmt.returning(*returning), rows).all()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(stmt.returning(*stmt.table.primary_key.columns), rows).all()
    else:
        session.execute(stmt, rows)
    return []


def pages(items, size=PAGE):
    return [items[i:i + size] for i in range(0, len(items), size)]
