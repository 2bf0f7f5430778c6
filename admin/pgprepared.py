"""A pg8000 cursor that prepares each statement once per connection, for the GUI's reads.

pg8000's own cursor sends a statement with parameters as an unnamed one, parsed and
described again on every call: three round trips to the server, and its placeholders
converted character by character in Python each time. A GUI page sends the same few
statements over and over, so here each is parsed once per connection and then costs one
round trip (bind and execute) and no conversion. Used on the autocommit connections that
only read (``db.make_engine``'s ``reading`` pool).
"""
from collections import OrderedDict

from pg8000.converters import make_params
from pg8000.dbapi import convert_paramstyle
from pg8000.exceptions import DatabaseError
from pg8000.legacy import Cursor, IntegrityError, InterfaceError, ProgrammingError

KEPT = 64  # statements prepared per connection; the least recently used is closed beyond
PLAN_CHANGED = "0A000"  # 'cached plan must not change result type' (the schema changed)


class PreparedStatements:
    """The statements prepared on one connection, by their SQL text (least recent first)."""

    def __init__(self, connection):
        self.connection = connection
        self.by_sql = OrderedDict()

    def get(self, sql, paramstyle):
        entry = self.by_sql.get(sql)
        if entry is not None:
            self.by_sql.move_to_end(sql)
            return entry
        statement, _ = convert_paramstyle(paramstyle, sql, ())
        entry = self.connection.prepare_statement(statement, ())
        self.by_sql[sql] = entry
        if len(self.by_sql) > KEPT:
            self.forget(next(iter(self.by_sql)))
        return entry

    def forget(self, sql):
        entry = self.by_sql.pop(sql, None)
        if entry is not None:
            self.connection.close_prepared_statement(entry[0])


class PreparedCursor(Cursor):
    def __init__(self, connection, statements):
        super().__init__(connection)
        self._statements = statements

    def execute(self, operation, args=(), stream=None):
        if stream is not None or not args:  # a COPY, or no parameters: one round trip already
            return super().execute(operation, args, stream)
        c = self._c
        try:
            if not c._in_transaction and not c.autocommit:
                c.execute_simple("begin transaction")
            try:
                self._context = self._run(operation, args)
            except DatabaseError as e:
                if _code(e) != PLAN_CHANGED:
                    raise
                self._statements.forget(operation)  # prepared before a schema change
                self._context = self._run(operation, args)
        except AttributeError as e:
            if c._sock is None:
                raise InterfaceError("connection is closed") from e
            raise
        except DatabaseError as e:
            mapped = _dbapi_error(e)
            if mapped is e:
                raise
            raise mapped from e
        self._row_iter = iter([] if self._context.rows is None else self._context.rows)
        self._input_oids = ()
        self.input_types = []
        return self

    def _run(self, operation, args):
        c = self._c
        name, columns, input_funcs = self._statements.get(operation, self.paramstyle)
        return c.execute_named(name, make_params(c.py_types, args), columns, input_funcs,
                               operation)


def _code(error):
    msg = error.args[0] if error.args else None
    return msg.get("C") if isinstance(msg, dict) else None


def _dbapi_error(error):
    """The exception pg8000's own cursor raises for a server error (as SQLAlchemy expects)."""
    if isinstance(error, (InterfaceError, IntegrityError, ProgrammingError)):
        return error
    code = _code(error)
    if code == "28000":
        return InterfaceError(error.args[0])
    if code == "23505":
        return IntegrityError(error.args[0])
    return ProgrammingError(error.args[0])


def prepare_statements(dbapi_connection):
    """Make ``dbapi_connection`` (a pg8000 connection) hand out ``PreparedCursor``s.

    Each execution is still planned for its own parameters, as an unnamed statement is: a
    generic plan, which PostgreSQL may switch a prepared statement to after five runs,
    can be far worse for some values (a sharee's 200 paths in ``= ANY(array)`` took 300
    ms instead of 2)."""
    dbapi_connection.execute_simple("SET plan_cache_mode = force_custom_plan")
    statements = PreparedStatements(dbapi_connection)
    dbapi_connection.cursor = lambda: PreparedCursor(dbapi_connection, statements)
