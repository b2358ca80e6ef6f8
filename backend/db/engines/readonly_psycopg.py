"""The server's read-only guard on psycopg 3 read connections (sync and async): cursor classes.

Imported by readonly.py for a psycopg engine only: psycopg is an optional extra.

psycopg 3 cannot carry `SET TRANSACTION READ ONLY; <statement>` in one message as psycopg2
does: with parameters it sends the extended protocol, one statement per message (42601), and
without, it keeps every result and stands on the SET's, which SQLAlchemy reads as a statement
that returns no rows. What it has instead is pipeline mode: BEGIN READ ONLY, the statement and
COMMIT sent together and answered together, one round trip as the statement alone (psycopg docs,
"Pipeline mode support"). Behind a transaction-mode pooler, where no startup option can make
the server read-only, each read on an autocommit read connection runs so.

A server-side cursor (DECLARE) needs a transaction: a READ ONLY one is begun before it, and is
ended when the connection goes back to the pool (the pool's rollback; readonly.py's checkin for
a pool told not to). Statements run while it is open belong to it.

The classes are mixed into whatever cursor classes the connection already has (another part of
the layer may have set its own), after them: what such a class does around `execute` (a
deadline, say) covers the whole pipeline, its round trip included.
"""

import contextlib
from typing import Any, Self

import psycopg
from psycopg.pq import TransactionStatus

BEGIN = b"BEGIN READ ONLY"
COMMIT = b"COMMIT"


def _outside_transaction(
    connection: "psycopg.Connection[Any] | psycopg.AsyncConnection[Any]",
) -> bool:
    # Only an autocommit connection not inside a transaction of its own (a server-side cursor's,
    # a `with connection.transaction()`) runs a statement as a transaction of its own.
    status = connection.info.transaction_status
    return connection.autocommit and status == TransactionStatus.IDLE


class PipelinedReadCursor(psycopg.Cursor[Any]):
    """Outside a transaction, each statement in BEGIN READ ONLY … COMMIT, in one round trip."""

    def execute(self, *args: Any, **kwargs: Any) -> Self:
        connection = self.connection
        if not _outside_transaction(connection):
            return super().execute(*args, **kwargs)
        try:
            with connection.pipeline():
                # Plain cursors for the brackets: the connection's own factory is this class.
                psycopg.Cursor(connection).execute(BEGIN, prepare=False)
                super().execute(*args, **kwargs)
                psycopg.Cursor(connection).execute(COMMIT, prepare=False)
        except Exception:
            _roll_back(connection)
            raise
        return self

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        connection = self.connection
        if not _outside_transaction(connection):
            return super().executemany(*args, **kwargs)
        try:
            with connection.pipeline():
                psycopg.Cursor(connection).execute(BEGIN, prepare=False)
                super().executemany(*args, **kwargs)
                psycopg.Cursor(connection).execute(COMMIT, prepare=False)
        except Exception:
            _roll_back(connection)
            raise


class AsyncPipelinedReadCursor(psycopg.AsyncCursor[Any]):
    """PipelinedReadCursor's async twin."""

    async def execute(self, *args: Any, **kwargs: Any) -> Self:
        connection = self.connection
        if not _outside_transaction(connection):
            return await super().execute(*args, **kwargs)
        try:
            async with connection.pipeline():
                await psycopg.AsyncCursor(connection).execute(BEGIN, prepare=False)
                await super().execute(*args, **kwargs)
                await psycopg.AsyncCursor(connection).execute(COMMIT, prepare=False)
        except Exception:
            await _roll_back_async(connection)
            raise
        return self

    async def executemany(self, *args: Any, **kwargs: Any) -> None:
        connection = self.connection
        if not _outside_transaction(connection):
            return await super().executemany(*args, **kwargs)
        try:
            async with connection.pipeline():
                await psycopg.AsyncCursor(connection).execute(BEGIN, prepare=False)
                await super().executemany(*args, **kwargs)
                await psycopg.AsyncCursor(connection).execute(COMMIT, prepare=False)
        except Exception:
            await _roll_back_async(connection)
            raise


class ReadOnlyServerCursor(psycopg.ServerCursor[Any]):
    """DECLARE inside a READ ONLY transaction, begun first when there is none."""

    def execute(self, *args: Any, **kwargs: Any) -> Self:
        if _outside_transaction(self.connection):
            psycopg.Cursor(self.connection).execute(BEGIN, prepare=False)
        return super().execute(*args, **kwargs)


class AsyncReadOnlyServerCursor(psycopg.AsyncServerCursor[Any]):
    async def execute(self, *args: Any, **kwargs: Any) -> Self:
        if _outside_transaction(self.connection):
            await psycopg.AsyncCursor(self.connection).execute(BEGIN, prepare=False)
        return await super().execute(*args, **kwargs)


def _roll_back(connection: "psycopg.Connection[Any]") -> None:
    """After a failed pipeline: the statement's error aborted the transaction (or the client
    refused the statement after BEGIN was sent); without this the next read would meet
    `InFailedSqlTransaction`. A connection that cannot is broken, and SQLAlchemy then discards
    it (its is_disconnect reads `broken`): the statement's error is the one to raise."""
    if connection.broken or connection.info.transaction_status == TransactionStatus.IDLE:
        return
    with contextlib.suppress(psycopg.Error):
        connection.rollback()


async def _roll_back_async(connection: "psycopg.AsyncConnection[Any]") -> None:
    if connection.broken or connection.info.transaction_status == TransactionStatus.IDLE:
        return
    with contextlib.suppress(psycopg.Error):
        await connection.rollback()


_MIXED: dict[tuple[type[Any], type[Any]], type[Any]] = {}


def _mixed(base: type[Any], guard: type[Any]) -> type[Any]:
    if issubclass(base, guard):
        return base
    if issubclass(guard, base):  # psycopg's own class: the guard is its subclass already
        return guard
    if (base, guard) not in _MIXED:
        # (base, guard): base's own methods run first and reach the guard through super().
        name = f"ReadOnly{base.__name__}"
        _MIXED[base, guard] = type(name, (base, guard), {"__module__": __name__})
    return _MIXED[base, guard]


def install(driver_connection: Any, *, pipelined: bool) -> None:
    """Guard a new psycopg (Async)Connection of a read engine: server-side cursors always,
    and, with `pipelined` (behind a pooler), every statement outside a transaction."""
    server: type[Any]
    plain: type[Any]
    if isinstance(driver_connection, psycopg.AsyncConnection):
        server, plain = AsyncReadOnlyServerCursor, AsyncPipelinedReadCursor
    else:
        server, plain = ReadOnlyServerCursor, PipelinedReadCursor
    driver_connection.server_cursor_factory = _mixed(
        driver_connection.server_cursor_factory, server
    )
    if pipelined:
        driver_connection.cursor_factory = _mixed(driver_connection.cursor_factory, plain)


def pipelined(driver_connection: Any) -> bool:
    """Are this connection's new cursors still guarded (no factory set over ours since)?"""
    factory = driver_connection.cursor_factory
    return issubclass(factory, (PipelinedReadCursor, AsyncPipelinedReadCursor))


def in_transaction(driver_connection: Any) -> bool:
    return bool(driver_connection.info.transaction_status != TransactionStatus.IDLE)
