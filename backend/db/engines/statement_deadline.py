"""A client-side statement timeout for the libpq drivers (psycopg2; psycopg 3's sync
connections through backend.db.engines.psycopg_deadline), which have none.

libpq waits for an answer as long as its socket is open. TCP keepalives and TCP_USER_TIMEOUT
close the socket when the peer is gone, but not when something alive on the path (Neon's proxy,
a pooler, a middlebox) holds the connection and says nothing: its kernel acknowledges every
probe. So each call that waits for the server registers with a watchdog thread, and a call
still waiting at its deadline has its socket shut down: libpq's wait ends at once, the call
raises StatementTimeout, and SQLAlchemy discards the connection as it does any lost one.

Not psycopg2's wait callback (green mode): it is process-wide, and makes cursor.copy_* raise for
every psycopg2 connection in the process. Not PQcancel: the answer to a cancel comes back on the
connection that is stalled.
"""

import functools
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol, TypeVar

import psycopg2
from psycopg2.extensions import connection, cursor

from backend.db.engines.error_reports import no_answer

T = TypeVar("T")


class StatementTimeout(psycopg2.OperationalError):
    """No answer within the statement timeout; the connection was closed to end the wait."""


# psycopg2's own slot for a connection's default cursor class, which its cursor() reads.
_CURSOR_FACTORY = connection.__dict__["cursor_factory"]


class BoundedConnection(connection):
    """A psycopg2 connection whose waits for the server end after `statement_timeout` seconds."""

    statement_timeout: float = 0.0

    # Whatever cursor class is set later stays bounded: psycopg2.connect(cursor_factory=…)
    # sets it after the connection_factory has made the connection, and so does an
    # instrumentation that wraps connect (opentelemetry-instrumentation-psycopg2 passes its
    # tracing class): set as given, statements would run without the deadline.
    @property
    def cursor_factory(self) -> Any:
        return _CURSOR_FACTORY.__get__(self, BoundedConnection)

    @cursor_factory.setter
    def cursor_factory(self, factory: Any) -> None:
        _CURSOR_FACTORY.__set__(self, bounded_cursor_class(factory))

    def commit(self) -> None:
        bounded(self, super().commit)

    def rollback(self) -> None:
        bounded(self, super().rollback)


class BoundedCursor(cursor):
    """The cursor of a BoundedConnection: each call that waits for the server is bounded."""

    def execute(self, query: Any, vars: Any = None) -> None:
        bounded(self.connection, super().execute, query, vars)

    def executemany(self, query: Any, vars_list: Any) -> None:
        bounded(self.connection, super().executemany, query, vars_list)

    def callproc(self, procname: Any, parameters: Any = None, /) -> None:
        bounded(self.connection, super().callproc, procname, parameters)

    # Only a named (server-side) cursor fetches from the server; the others hold their rows.
    def fetchone(self) -> tuple[Any, ...] | None:
        return bounded(self.connection, super().fetchone) if self.name else super().fetchone()

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        fetch = super().fetchmany
        return bounded(self.connection, fetch, size) if self.name else fetch(size)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return bounded(self.connection, super().fetchall) if self.name else super().fetchall()


@functools.cache  # one class per factory: an instrumentation sets its own at every connect
def bounded_cursor_class(factory: Any) -> type[cursor]:
    """`factory`, a cursor class, with each wait for the server bounded as BoundedCursor's."""
    if factory is None or factory is cursor:
        return BoundedCursor
    if not (isinstance(factory, type) and issubclass(factory, cursor)):
        raise TypeError(
            "DATABASE_STATEMENT_TIMEOUT bounds psycopg2 cursors by their class; the "
            f"cursor_factory {factory!r} is not a cursor class: set DATABASE_STATEMENT_TIMEOUT=0 "
            "to use it"
        )
    if issubclass(factory, BoundedCursor):
        return factory
    return type(f"Bounded{factory.__name__}", (BoundedCursor, factory), {})


def bounded_connection_factory(seconds: float) -> Callable[[str, int], BoundedConnection]:
    """psycopg2.connect's `connection_factory` for connections bounded to `seconds` per call."""

    def connect(dsn: str, async_: int = 0) -> BoundedConnection:
        made = BoundedConnection(dsn, async_=async_)
        made.statement_timeout = seconds
        made.cursor_factory = BoundedCursor
        return made

    return connect


def bounded(conn: object, call: Callable[..., T], *args: Any) -> T:
    """`call(*args)`, its wait for the server ended at the connection's statement timeout."""
    seconds = getattr(conn, "statement_timeout", 0.0)
    if not seconds or not isinstance(conn, connection) or conn.closed or conn.fileno() < 0:
        return call(*args)  # no timeout, or nothing to wait on: psycopg2 raises at once
    return watched(conn, conn.fileno(), seconds, StatementTimeout, call, *args)


class _Closable(Protocol):
    def close(self) -> None: ...


def watched(
    conn: _Closable,
    fd: int,
    seconds: float,
    timeout: type[Exception],
    call: Callable[..., T],
    /,
    *args: Any,
    **kwargs: Any,
) -> T:
    """`call(*args, **kwargs)` on `conn`, whose socket is `fd`, ended after `seconds`: then the
    socket is shut down, `conn` closed, and `timeout` (the driver's OperationalError) raised."""
    wait = _Wait(fd, seconds)
    _watchdog.watch(wait)
    try:
        return call(*args, **kwargs)
    except Exception as error:
        if _watchdog.unwatch(wait):
            conn.close()  # libpq may not have noticed; SQLAlchemy reads `closed` as a disconnect
            raise timeout(no_answer(seconds)) from error
        raise
    finally:
        # (Again, if the deadline passed.) An answer that came as the deadline passed stands;
        # the connection is then broken, and its next use fails as a lost connection does.
        _watchdog.unwatch(wait)


class _Wait:
    __slots__ = ("deadline", "expired", "fd", "seconds")

    def __init__(self, fd: int, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.expired = False
        # A duplicate: libpq closes its own descriptor when it sees the connection lost, and
        # that number may then name another socket by the time the watchdog acts.
        self.fd = os.dup(fd)

    def expire(self) -> None:
        self.expired = True
        with suppress(OSError):
            sock = socket.socket(fileno=self.fd)
            try:
                sock.shutdown(socket.SHUT_RDWR)  # for every descriptor of it, libpq's too
            finally:
                sock.detach()  # the descriptor stays the wait's to close

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Watchdog:
    """One thread for every bounded connection; it sleeps until the nearest deadline.

    With nothing to watch it still wakes every `_period` (the shortest timeout seen), so that a
    new deadline, at least that far away, never needs to wake it: waking a thread on every
    statement would cost more than the statement's own work on the client.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._waits: set[_Wait] = set()  # at most one per connection in use
        self._period = math.inf
        self._next = math.inf  # when the thread wakes next
        self._thread: threading.Thread | None = None

    def watch(self, wait: _Wait) -> None:
        with self._lock:
            self._waits.add(wait)
            self._period = min(self._period, wait.seconds)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="libpq-statement-timeout", daemon=True
                )
                self._thread.start()
            elif wait.deadline < self._next:
                self._lock.notify()

    def unwatch(self, wait: _Wait) -> bool:
        """Stop watching; True if the deadline passed first (the socket is shut down)."""
        with self._lock:
            self._waits.discard(wait)
        wait.close()  # out of the set, so expire() can no longer reach it
        return wait.expired

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for wait in [wait for wait in self._waits if wait.deadline <= now]:
                    self._waits.discard(wait)
                    wait.expire()
                self._next = min(
                    (wait.deadline for wait in self._waits), default=now + self._period
                )
                self._lock.wait(self._next - now)


_watchdog = _Watchdog()


def _after_fork() -> None:
    # A child has no watchdog thread, and the lock may have been held by another thread.
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)
