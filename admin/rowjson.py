"""Pages of rows as the API's JSON objects, built where it costs least.

On PostgreSQL the database builds each row's object (``json_build_object``, timestamps as
ISO text): the admin server receives one text column per row and parses the page in one
call (orjson), instead of decoding a dozen columns a row and building the dicts in Python
(two thirds of a 200-file page's CPU). On SQLite the same fields are read as columns and
turned into the same dicts here. ``Fields`` names each key once for both.
"""
import orjson
from sqlalchemy import DateTime, Text, cast, func, literal_column

from securifile.common.times import iso


class Field:
    """One key of the object: ``column`` (a DateTime one becomes ISO text); ``postgres``
    instead of it on PostgreSQL (already the JSON value), and ``convert`` for what the
    column gives on SQLite."""

    def __init__(self, key, column, postgres=None, convert=None):
        self.key, self.column, self.postgres = key, column, postgres
        if convert is None and isinstance(column.type, DateTime):
            convert = iso
        self.convert = convert

    def on_postgres(self):
        if self.postgres is not None:
            return self.postgres
        if isinstance(self.column.type, DateTime):
            return iso_text(self.column)
        return self.column


class Fields:
    def __init__(self, *fields):
        self.fields = fields
        self._columns = {}  # per database kind: built once, their cache keys memoized

    def columns(self, s):
        """What to select for the objects, on ``s``'s database."""
        postgres = on_postgres(s)
        if postgres not in self._columns:
            self._columns[postgres] = self._build(postgres)
        return self._columns[postgres]

    def _build(self, postgres):
        if postgres:
            pairs = []
            for f in self.fields:
                pairs += [literal_column(sql_string(f.key)), f.on_postgres()]
            return [cast(func.json_build_object(*pairs), Text).label("json")]
        return [f.column.label(f.key) for f in self.fields]

    def objects(self, s, rows):
        """The dicts of ``rows`` (selected with ``columns``), in their order."""
        if on_postgres(s):
            return orjson.loads("[" + ",".join(r[0] for r in rows) + "]")
        fields = [(i, f.key, f.convert) for i, f in enumerate(self.fields)]
        return [{key: r[i] if convert is None else convert(r[i]) for i, key, convert in fields}
                for r in rows]


def on_postgres(s):
    return s.get_bind().dialect.name == "postgresql"


def sql_string(text):
    return "'" + text.replace("'", "''") + "'"


def iso_text(column):
    """PostgreSQL: a timestamptz as ``common.times.iso`` writes it, in UTC
    ('2026-11-20T09:30:00.500000+00:00'; no fraction at a whole second; NULL stays NULL)."""
    utc = column.op("AT TIME ZONE")(literal_column("'UTC'"))
    text = func.to_char(utc, literal_column("'YYYY-MM-DD\"T\"HH24:MI:SS.US'"))
    # One to_char a timestamp: '.000000' can only be the fraction. NULL || x is NULL.
    return func.replace(text, literal_column("'.000000'"), literal_column("''")).op("||")(
        literal_column("'+00:00'"))
