"""How long each path waits for the server: a dead link and a stalled one end in bounded time.

- A dead link (a peer gone, a route lost, a NAT entry dropped): TCP keepalives after a third of
  DATABASE_TCP_USER_TIMEOUT of silence, and TCP_USER_TIMEOUT for unacknowledged data, so the
  kernel drops the connection after about DATABASE_TCP_USER_TIMEOUT. libpq (psycopg2, psycopg
  3) takes them as connection parameters; asyncpg has none, so they are set on its socket once
  it connects.
- A stalled link (something alive on the path holds the connection and says nothing, which
  keepalives cannot see) or a runaway statement: DATABASE_STATEMENT_TIMEOUT, client-side, per
  call: asyncpg's command_timeout, backend.db.engines.statement_deadline for psycopg2, and
  backend.db.engines.psycopg_deadline for psycopg 3.
  Not the server's statement_timeout: as a startup option PgBouncer refuses it (unsupported
  startup parameter: options), and SET LOCAL at every BEGIN would cost a round trip per
  transaction.

Either way the connection is discarded, as any lost connection is; the request answers 504
(the statement timeout) or 503.

build.py calls two functions whatever the driver: deadline_connect_args and bound_waits.
"""

import socket
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, ExceptionContext
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

from backend.db.engines.error_reports import no_answer
from backend.db.engines.statement_deadline import bounded_connection_factory

PROBES = 3  # keepalive probes, a third of the timeout apart


def libpq_tcp_parameters(url: URL, seconds: int) -> URL:
    """The URL with libpq's keepalive and TCP_USER_TIMEOUT parameters it does not set itself."""
    if not seconds:
        return url
    probe = str(max(1, seconds // PROBES))
    wanted = {
        "keepalives": "1",
        "keepalives_idle": probe,
        "keepalives_interval": probe,
        "keepalives_count": str(PROBES),
        "tcp_user_timeout": str(seconds * 1000),  # milliseconds
    }
    return url.update_query_dict({k: v for k, v in wanted.items() if k not in url.query})


def deadline_connect_args(driver: str, statement_timeout: float) -> dict[str, Any]:
    """The connect_args that bound `driver`'s waits (`driver`: the dialect's, "psycopg2",
    "psycopg" or "asyncpg"); psycopg's and asyncpg's are set up by bound_waits."""
    if driver == "psycopg2" and statement_timeout:
        return {"connection_factory": bounded_connection_factory(statement_timeout)}
    return {}


def bound_waits(
    engine: Engine, *, statement_timeout: float, tcp_user_timeout: int, command_timeout: float
) -> None:
    """On a built engine (an AsyncEngine's sync_engine): the listeners that bound its driver's
    waits. `command_timeout`: asyncpg's, which DATABASE_URL may set apart."""
    driver = engine.dialect.driver
    if driver == "asyncpg":
        bound_asyncpg_waits(engine, tcp_user_timeout, command_timeout)
    elif driver == "psycopg" and statement_timeout:
        bound_psycopg_waits(engine, statement_timeout)


def bound_psycopg_waits(engine: Engine, seconds: float) -> None:
    """psycopg 3's connections made as the bounded ones of backend.db.engines.psycopg_deadline.

    By the engine's dialect's connect(), the documented way a dialect makes its DBAPI
    connection, which retry_connects' do_connect listener calls: a do_connect listener of its
    own would never be asked (the first to return a connection wins, and `insert=True` does not
    put one first), and psycopg.connect takes no connection class.
    """
    # Imported here: psycopg is an extra.
    from backend.db.engines.psycopg_deadline import async_connector, connector

    dialect = engine.dialect
    if dialect.is_async:
        # SQLAlchemy's psycopg adapter connects with `async_creator_fn` when given one: an
        # undocumented keyword of its adapted connect() (dialects/postgresql/psycopg.py, the same
        # from 2.0.30 to 2.1), so checked against sqlalchemy<2.2 in pyproject.toml.
        creator = async_connector(seconds)

        def connect(*args: Any, **kwargs: Any) -> Any:
            return dialect.loaded_dbapi.connect(*args, **kwargs, async_creator_fn=creator)

    else:
        connect = connector(seconds)
    setattr(dialect, "connect", connect)  # noqa: B010 (mypy refuses assigning to a method)


def bound_asyncpg_waits(engine: Engine, tcp_user_timeout: int, command_timeout: float) -> None:
    """On an AsyncEngine's sync_engine: TCP options on each new socket, and asyncpg's
    command_timeout (a bare TimeoutError, which SQLAlchemy passes through as it is) turned into
    the OperationalError of a lost connection, so that the connection is discarded."""

    @event.listens_for(engine, "connect")
    def set_tcp_options(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # asyncpg offers no public way to its socket; its transport is the one way in.
        transport = dbapi_connection.driver_connection._transport
        set_socket_options(transport.get_extra_info("socket"), tcp_user_timeout)

    @event.listens_for(engine, "handle_error")
    def timed_out(context: ExceptionContext) -> OperationalError | None:
        if not command_timeout or not isinstance(context.original_exception, TimeoutError):
            return None
        # asyncpg is still cancelling the statement on that connection: it cannot be reused.
        context.is_disconnect = True
        # Dropped here, at once: on a link that answers nothing, asyncpg before 0.32 waits for
        # the cancel's acknowledgement with no bound, even in the close(timeout=2) that
        # SQLAlchemy's invalidation then calls (MagicStack/asyncpg#1356).
        if context.connection is not None:
            driver = context.connection.connection.driver_connection
            if driver is not None and not driver.is_closed():
                driver.terminate()
        return OperationalError(
            context.statement,
            context.parameters,
            TimeoutError(no_answer(command_timeout)),
            hide_parameters=context.engine is not None and context.engine.hide_parameters,
            connection_invalidated=True,
        )


def discard_desynced_connections(engine: Engine) -> None:
    """On an AsyncEngine's sync_engine: asyncpg's protocol-state errors (`cannot switch to
    state 13; another operation (2) is in progress`, as when the server ends a connection in
    the middle of a statement) discard the connection and answer as a lost one.

    Such a connection's protocol no longer matches the server: reused, it fails again at once.
    SQLAlchemy before 2.0.50 passes the error through untranslated (not a DBAPIError: a 500,
    and the connection back in the pool: sqlalchemy/sqlalchemy#13241); 2.0.50 and later
    translate it into an InternalError, which invalidates the connection only if asyncpg has
    closed it already. Either way it becomes the OperationalError of an invalidated connection.
    """

    # Imported here: asyncpg is an extra, and only an async engine gets this listener.
    from asyncpg.exceptions import (  # type: ignore[import-untyped]  # asyncpg ships no types
        InternalClientError,
        OutdatedSchemaCacheError,
        TargetServerAttributeNotMatched,
    )

    @event.listens_for(engine, "handle_error")
    def desynced(context: ExceptionContext) -> OperationalError | None:
        error = context.original_exception
        # Untranslated, or the dialect's InternalClientError raised from asyncpg's.
        driver_error = error if isinstance(error, InternalClientError) else error.__cause__
        if not isinstance(driver_error, InternalClientError) or isinstance(
            # Not desynced: a stale statement cache, a server of the wrong role at connect.
            driver_error,
            OutdatedSchemaCacheError | TargetServerAttributeNotMatched,
        ):
            return None
        context.is_disconnect = True
        return OperationalError(
            context.statement,
            context.parameters,
            driver_error,
            hide_parameters=context.engine is not None and context.engine.hide_parameters,
            connection_invalidated=True,
        )


def set_socket_options(sock: Any, seconds: int) -> None:
    if not seconds or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a unix socket has no link to lose
    probe = max(1, seconds // PROBES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", probe),
        ("TCP_KEEPINTVL", probe),
        ("TCP_KEEPCNT", PROBES),
        ("TCP_USER_TIMEOUT", seconds * 1000),
    ):
        # Linux's names, as libpq uses them; elsewhere what the platform lacks keeps its default.
        if (option := getattr(socket, name, None)) is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
