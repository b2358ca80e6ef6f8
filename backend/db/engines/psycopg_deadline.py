"""DATABASE_STATEMENT_TIMEOUT for psycopg 3, which has no client-side timeout of its own.

Sync: the watchdog of backend.db.engines.statement_deadline, as for psycopg2: a call still
waiting at its deadline has its socket shut down, psycopg raises, the connection is closed and
StatementTimeout raised. A cancel could not end it: on a stalled link the cancel's own
connection gets no answer either.

Async: asyncio's timeout around each wait. Interrupted, psycopg sends the server a cancel and
waits for the statement to end, each for up to 5 s, then closes the connection (from psycopg
3.3.6; before, that wait had no bound: psycopg/psycopg#1371). The connection is closed either
way and StatementTimeout raised: it may still be inside a transaction the cancel aborted.

Either way SQLAlchemy sees a closed connection (its psycopg dialect's is_disconnect) and
discards it, and the answer is a timeout, like asyncpg's command_timeout.

Imported only where psycopg is installed (an extra).
"""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Self, TypeVar

import psycopg
from psycopg.rows import TupleRow

from backend.db.engines.error_reports import no_answer
from backend.db.engines.statement_deadline import watched

T = TypeVar("T")


class StatementTimeout(psycopg.OperationalError):
    """No answer within the statement timeout; the connection was closed to end the wait."""


class BoundedConnection(psycopg.Connection[TupleRow]):
    """A psycopg connection whose waits for the server end after `statement_timeout` seconds
    (its cursors, made by the factories `connect` sets, bound theirs)."""

    statement_timeout: float = 0.0

    def commit(self) -> None:
        _bounded(self, super().commit)

    def rollback(self) -> None:
        _bounded(self, super().rollback)


class BoundedCursor(psycopg.Cursor[Any]):
    # A client-side cursor holds its rows once execute() returns: only the execute waits.
    def execute(self, *args: Any, **kwargs: Any) -> Self:
        return _bounded(self.connection, super().execute, *args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        _bounded(self.connection, super().executemany, *args, **kwargs)


class BoundedServerCursor(psycopg.ServerCursor[Any]):
    # SQLAlchemy's server-side cursors (stream_results, yield_per): each fetch is a round trip.
    def execute(self, *args: Any, **kwargs: Any) -> Self:
        return _bounded(self.connection, super().execute, *args, **kwargs)

    def fetchone(self) -> Any:
        return _bounded(self.connection, super().fetchone)

    def fetchmany(self, size: int = 0) -> list[Any]:
        return _bounded(self.connection, super().fetchmany, size)

    def fetchall(self) -> list[Any]:
        return _bounded(self.connection, super().fetchall)

    def close(self) -> None:  # sends CLOSE and waits for its answer
        _bounded(self.connection, super().close)


def connector(seconds: float) -> Callable[..., BoundedConnection]:
    """What makes the sync engine's connections: psycopg.connect, bounded to `seconds`."""

    def connect(*args: Any, **kwargs: Any) -> BoundedConnection:
        made = BoundedConnection.connect(*args, **kwargs)
        made.statement_timeout = seconds
        made.cursor_factory = BoundedCursor
        made.server_cursor_factory = BoundedServerCursor
        return made

    return connect


def _bounded(conn: psycopg.Connection[Any], call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    seconds = getattr(conn, "statement_timeout", 0.0)
    if not seconds or conn.closed:
        return call(*args, **kwargs)  # no timeout, or nothing to wait on: psycopg raises at once
    return watched(conn, conn.fileno(), seconds, StatementTimeout, call, *args, **kwargs)


class BoundedAsyncConnection(psycopg.AsyncConnection[TupleRow]):
    """The async twin of BoundedConnection."""

    statement_timeout: float = 0.0

    async def commit(self) -> None:
        await _within(self, super().commit())

    async def rollback(self) -> None:
        await _within(self, super().rollback())


class BoundedAsyncCursor(psycopg.AsyncCursor[Any]):
    async def execute(self, *args: Any, **kwargs: Any) -> Self:
        return await _within(self.connection, super().execute(*args, **kwargs))

    async def executemany(self, *args: Any, **kwargs: Any) -> None:
        await _within(self.connection, super().executemany(*args, **kwargs))


class BoundedAsyncServerCursor(psycopg.AsyncServerCursor[Any]):
    async def execute(self, *args: Any, **kwargs: Any) -> Self:
        return await _within(self.connection, super().execute(*args, **kwargs))

    async def fetchone(self) -> Any:
        return await _within(self.connection, super().fetchone())

    async def fetchmany(self, size: int = 0) -> list[Any]:
        return await _within(self.connection, super().fetchmany(size))

    async def fetchall(self) -> list[Any]:
        return await _within(self.connection, super().fetchall())

    async def close(self) -> None:
        await _within(self.connection, super().close())


def async_connector(seconds: float) -> Callable[..., Awaitable[BoundedAsyncConnection]]:
    """SQLAlchemy's `async_creator_fn`: psycopg.AsyncConnection.connect, bounded to `seconds`."""

    async def connect(*args: Any, **kwargs: Any) -> BoundedAsyncConnection:
        made = await BoundedAsyncConnection.connect(*args, **kwargs)
        made.statement_timeout = seconds
        made.cursor_factory = BoundedAsyncCursor
        made.server_cursor_factory = BoundedAsyncServerCursor
        return made

    return connect


async def _within(conn: psycopg.AsyncConnection[Any], waiting: Coroutine[Any, Any, T]) -> T:
    seconds = getattr(conn, "statement_timeout", 0.0)
    if not seconds or conn.closed:
        return await waiting
    try:
        async with asyncio.timeout(seconds):
            return await waiting
    except TimeoutError as error:
        # psycopg has cancelled the statement, or closed the connection when it could not.
        await conn.close()
        raise StatementTimeout(no_answer(seconds)) from error
