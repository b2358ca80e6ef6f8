"""Read-only sessions: one round trip for a one-query read, and the server refuses any write.

A normal session pays BEGIN before its first statement and ROLLBACK when closed; a read that
needs no transaction pays them for nothing (3 round trips for one SELECT). A read engine runs
in autocommit, and each read still runs in a READ ONLY transaction, so that the server refuses
every write (functions included), on a direct host or behind a transaction-mode pooler:

- psycopg2 (the sync engine) sends `SET TRANSACTION READ ONLY; <statement>` as one simple
  Query, which PostgreSQL runs as one implicit transaction: one round trip, read-only by the
  server. It holds while <statement> is exactly one statement that does not end the
  transaction, which the statement check (below) makes sure of.
- psycopg 3 (sync or async) cannot send that (one statement per message when it binds
  parameters; every result kept otherwise). On a direct host the server's read-only default
  guards, as for asyncpg below. Behind a pooler each statement outside a transaction is sent
  as BEGIN READ ONLY, the statement, COMMIT in one pipeline: one round trip
  (readonly_psycopg.py).
- asyncpg (the async engine) sends each statement in the extended protocol, one statement per
  message, so nothing can ride along. On a direct host the server's read-only default
  (default_transaction_read_only=on) comes in the startup packet, at no round trip. Behind a
  pooler (PgBouncer refuses startup options, and a SET would leak to other clients) each read
  session's connection runs in a transaction begun READ ONLY: one more round trip before its
  first statement, and its ROLLBACK when the session closes, after the response.
- A server-side cursor (stream_results, yield_per, AsyncSession.stream) needs a transaction:
  a READ ONLY one (psycopg2 and asyncpg leave autocommit for it; psycopg 3 sends BEGIN READ
  ONLY first), ended when the connection goes back to the pool.

Before a statement is sent, PostgreSQL's parser reads it as sent (psycopg2's with its
parameters bound, psycopg 3's and asyncpg's with $n placeholders) and refuses what is not
one read (backend/db/engines/readsql.py): a friendly early error for a write, and the refusal
of what a read-only transaction does not stop and a pooler would leak to the next client (SET,
set_config(), LISTEN, …).

On direct hosts default_transaction_read_only=on also guards SQL sent on the raw driver
connection. It is a session setting that a request could switch off (a user-defined function
calling set_config(), or SQL on the raw connection), and it would then stay off on the pooled
connection. So it is watched: the server reports the setting's every change (a ParameterStatus
message, PostgreSQL 14+), which the drivers keep, so looking costs no round trip. A connection
found with it off is closed.
"""

from collections.abc import Sequence
from typing import Any

import psycopg2.extensions
from sqlalchemy import Engine, event, exc
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlmodel import Session

from backend.db.engines.readsql import as_psycopg_sends, not_a_read_as_sent

READ_ONLY_SETTING = "default_transaction_read_only"
READ_ONLY_OPTIONS = f"-c {READ_ONLY_SETTING}=on"
# Sent before each psycopg2 read, in the same simple Query: the implicit transaction both run in
# is read-only (PostgreSQL runs a multi-statement Query as one transaction).
READ_ONLY_PREFIX = "SET TRANSACTION READ ONLY; "
# In a pooled connection's info: it left autocommit for a READ ONLY transaction.
IN_READ_TRANSACTION = "backend.read_only_transaction"


class ReadOnlyError(RuntimeError):
    """A write through a read-only session or engine."""


class ReadOnlySession(Session):
    """A session that refuses to flush changes: there is no transaction to put them in."""

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        if self.new or self.dirty or self.deleted:
            raise ReadOnlyError(
                "this is a read-only session (ReadSessionDep): write through SessionDep"
            )
        super().flush(objects)


def refuse_writes(engine: Engine, *, through_pooler: bool = False) -> None:
    """Make every read on `engine`'s own (autocommit) connections read-only by the server, and
    refuse, before it is sent, any statement that is not one read.

    `through_pooler`: no startup option makes the server read-only, so each read carries its
    READ ONLY transaction: psycopg2 in the same Query, psycopg 3 in the same pipeline, asyncpg
    in a transaction per read session. An engine whose connections are not in autocommit (a
    view of the app's engine) is left to its own READ ONLY transactions.
    """
    if engine.dialect.driver == "psycopg":
        _refuse_writes_psycopg(engine, through_pooler)
        return
    transaction_per_read = through_pooler and engine.dialect.driver == "asyncpg"

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def only_reads(
        connection: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> tuple[str, Any]:
        proxied = connection.connection
        driver = proxied.dbapi_connection
        _refuse_unless_read(connection, cursor, statement, parameters, context, executemany)
        if isinstance(driver, psycopg2.extensions.connection):
            if not driver.autocommit:
                return statement, parameters  # already in a READ ONLY transaction
            if cursor.name is not None:  # a server-side cursor: psycopg2 sends DECLARE … FOR
                _begin_read_only(proxied)
                return statement, parameters
            return READ_ONLY_PREFIX + statement, parameters
        if getattr(driver, "isolation_level", None) == "autocommit" and (
            getattr(cursor, "server_side", False) or transaction_per_read
        ):
            _begin_read_only(proxied)
        return statement, parameters

    @event.listens_for(engine, "checkin")
    def back_to_autocommit(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if dbapi_connection is None or not record.info.pop(IN_READ_TRANSACTION, False):
            return
        # The pool's reset has ended the transaction already (rollback on return); this one,
        # then a no-op, covers a pool told not to.
        dbapi_connection.rollback()
        if isinstance(dbapi_connection, psycopg2.extensions.connection):
            dbapi_connection.readonly = None
            dbapi_connection.autocommit = True
        else:
            dbapi_connection.readonly = False
            dbapi_connection.isolation_level = "autocommit"


def _refuse_writes_psycopg(engine: Engine, through_pooler: bool) -> None:
    from backend.db.engines import readonly_psycopg  # psycopg is an optional extra

    @event.listens_for(engine, "connect")
    def guard_cursors(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        readonly_psycopg.install(record.driver_connection, pipelined=through_pooler)

    _check_statements(engine)

    def guard_kept(connection: Connection, *_: Any) -> None:
        # Behind a pooler the pipelined cursor is the only server-side guard.
        if not readonly_psycopg.pipelined(connection.connection.driver_connection):
            raise ReadOnlyError(
                "this read connection's cursor_factory was replaced after its read-only guard "
                "was installed: set cursor classes before refuse_writes"
            )

    if through_pooler:
        event.listen(engine, "before_cursor_execute", guard_kept)

    @event.listens_for(engine, "checkin")
    def end_read_transaction(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # A server-side cursor's READ ONLY transaction: the pool's reset has ended it already
        # (rollback on return); this covers a pool told not to. The connection stays in
        # autocommit throughout.
        driver = record.driver_connection
        if driver is not None and not driver.closed and readonly_psycopg.in_transaction(driver):
            dbapi_connection.rollback()


def _begin_read_only(proxied: PoolProxiedConnection) -> None:
    """Take an autocommit connection out of autocommit, for a transaction that the driver
    begins READ ONLY with the next statement, until the connection goes back to the pool."""
    driver: Any = proxied.dbapi_connection
    if isinstance(driver, psycopg2.extensions.connection):
        driver.autocommit = False
        driver.readonly = True  # psycopg2 then begins with BEGIN READ ONLY
    else:
        # SQLAlchemy's asyncpg adapter: it begins asyncpg's transaction(readonly=...) at the
        # next statement, unless its isolation level is "autocommit".
        driver.isolation_level = "read_committed"
        driver.readonly = True
    proxied.info[IN_READ_TRANSACTION] = True


def _refuse_unless_read(
    connection: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: ExecutionContext | None,
    many: bool,
) -> None:
    proxied = connection.connection
    driver = proxied.dbapi_connection
    as_sent = _as_sent(
        connection.dialect.driver, driver, cursor, statement, parameters, context, many
    )
    for sent in as_sent:
        if reason := not_a_read_as_sent(sent):
            raise ReadOnlyError(
                f"a read-only engine does not run {reason}: write through SessionDep"
            )
    if not _standard_strings(proxied.driver_connection):
        raise ReadOnlyError(
            "standard_conforming_strings is off on this connection: the server would not read "
            "a statement's strings as the check does, so a read-only engine runs none"
        )


def _as_sent(
    driver_name: str,
    driver: Any,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: ExecutionContext | None,
    executemany: bool,
) -> list[str]:
    """The statement as the server gets it: psycopg2 binds parameters into its text (so a
    placeholder inside a string literal becomes SQL); psycopg 3 and asyncpg send them apart,
    psycopg 3 with its placeholders made $n."""
    if not parameters and getattr(context, "no_parameters", False):
        return [statement]  # SQLAlchemy calls execute(statement) alone: nothing is bound
    if driver_name == "psycopg":
        sent = as_psycopg_sends(statement)
        return [] if sent is None else [sent]  # None: psycopg refuses it and sends nothing
    if not isinstance(driver, psycopg2.extensions.connection):
        return [statement]
    encoding = psycopg2.extensions.encodings.get(driver.encoding, "utf-8")
    sets = parameters if executemany else [parameters]
    return [bytes(cursor.mogrify(statement, values)).decode(encoding) for values in sets]


def _standard_strings(driver_connection: Any) -> bool:
    """What the server last reported of standard_conforming_strings (the parser's reading);
    True when it reports nothing."""
    return _reported(driver_connection, "standard_conforming_strings") != "off"


def keep_server_guard(engine: Engine) -> None:
    """Close a direct read connection whose default_transaction_read_only was switched off.

    Checked after each statement (so that the request that did it fails at once, and runs
    nothing more on that connection) and at checkout (for SQL sent on the raw driver
    connection, which no statement event sees). A server older than 14 reports nothing: there
    the client check alone guards.
    """

    @event.listens_for(engine, "after_cursor_execute")
    def still_read_only(connection: Connection, *args: Any) -> None:
        if not _read_only(connection.connection.driver_connection):
            switched_off = ReadOnlyError(
                f"a statement switched {READ_ONLY_SETTING} off on a read-only connection; "
                "the connection is closed: write through SessionDep"
            )
            connection.invalidate(switched_off)
            raise switched_off

    @event.listens_for(engine, "checkout")
    def read_only_at_checkout(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        if not _read_only(record.driver_connection):
            # The pool's own answer to a connection it must not hand out: it closes it and
            # connects afresh (SQLAlchemy, "Disconnect Handling - Pessimistic").
            raise exc.DisconnectionError(f"{READ_ONLY_SETTING} was switched off")


def _read_only(driver_connection: Any) -> bool:
    """What the server last reported; True when it reports nothing (PostgreSQL < 14)."""
    return _reported(driver_connection, READ_ONLY_SETTING) in (None, "on")


def _reported(driver_connection: Any, name: str) -> str | None:
    """The server's last ParameterStatus for `name`, which the drivers keep (no round trip)."""
    info = getattr(driver_connection, "info", None)
    if info is not None:  # psycopg2 and psycopg 3 alike
        value = info.parameter_status(name)
    else:  # asyncpg keeps every ParameterStatus in its settings
        value = getattr(driver_connection.get_settings(), name, None)
    return None if value is None else str(value)


def read_only_view(engine: Any) -> Any:
    """A read engine on `engine`'s own pool (an Engine or AsyncEngine the app was given).

    Its connections are not ours to configure, so the server's guard comes from the
    transaction instead of the startup packet: every read runs in a READ ONLY transaction
    (SQLAlchemy's `postgresql_readonly` option, reset when the connection goes back to the
    pool), and writes are refused before they are sent. Listeners on the view are its own:
    the engine it is a view of is left as it was.
    """
    view = engine.execution_options(postgresql_readonly=True)
    # The statement check alone: the view's connections are in READ ONLY transactions.
    _check_statements(getattr(view, "sync_engine", view))
    return view


def _check_statements(engine: Engine) -> None:
    """Each statement read before it is sent, and refused unless it is one read (readsql.py)."""

    @event.listens_for(engine, "before_cursor_execute")
    def only_reads(
        connection: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        _refuse_unless_read(connection, cursor, statement, parameters, context, executemany)
