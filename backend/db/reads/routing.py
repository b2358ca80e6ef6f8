"""Which server a read session reads from: a replica, the primary, or none (503).

Routing happens once per read session (so once per request), when it first needs a
connection: `RoutedReadSession.get_bind()` asks the `ReadRouter` for one — SQLAlchemy's
documented hook for choosing a bind per session (its "Custom Vertical Partitioning"), as
Django's DATABASE_ROUTERS `db_for_read` does per query. The router checks a connection out of
a replica's pool *before* the session uses it, so a replica that cannot be reached is skipped
with nothing run on it, and the read goes to the next replica, or to the primary
(DATABASE_READ_FALLBACK=primary), or answers 503 (fail). What it knows of each replica is in
backend/db/reads/replicas.py.
"""

import select
from collections.abc import Callable, Sequence
from typing import Any

import psycopg2.extensions
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import InvalidatePoolError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db.connection.plan import ConnectionPlan
from backend.db.engines.error_reports import label
from backend.db.engines.errors import NoReadReplica
from backend.db.engines.readonly import ReadOnlySession
from backend.db.reads.replicas import ReplicaSet, measure_lag
from backend.db.sessions.scope import SESSION_OPTIONS, make_async_session_maker, make_session_maker


class ReadRouter:
    """Hands a read session a connection: a replica's, the primary's, or NoReadReplica."""

    def __init__(self, replicas: ReplicaSet, engines: Sequence[Engine], primary: Engine) -> None:
        self.replicas = replicas
        self.engines = list(engines)  # a sync Engine each (an AsyncEngine's sync_engine)
        self.primary = primary

    def connect(self) -> Connection:
        for index in self.replicas.order():
            connection = self._try(index)
            if connection is not None:
                return connection
        if self.replicas.fallback == "primary":
            return self.primary.connect()
        error = NoReadReplica(
            f"no read replica can take reads now ({self.replicas.summary()}), and "
            "DATABASE_READ_FALLBACK=fail"
        )
        label(error, ", ".join(str(engine.url.host) for engine in self.engines))
        raise error

    def _try(self, index: int) -> Connection | None:
        claim = self.replicas.claim(index)
        if claim is None:
            return None
        try:
            connection = self.engines[index].connect()
        except SQLAlchemyError as error:
            self.replicas.unavailable(index, error)
            return None
        except BaseException:  # a cancelled request: no verdict on the replica
            self.replicas.release(index) if claim == "probe" else None
            raise
        if claim == "use":
            return connection
        if self.replicas.max_lag == 0:
            self.replicas.reachable(index)
            return connection
        try:
            lag = measure_lag(connection)
        except SQLAlchemyError as error:
            connection.close()
            self.replicas.unavailable(index, error)
            return None
        except BaseException:
            connection.close()
            self.replicas.release(index)
            raise
        if self.replicas.measured(index, lag):
            return connection
        connection.close()
        return None


class RoutedReadSession(ReadOnlySession):
    """A read-only session whose connection the router chooses, once, at first use.

    `get_bind` may hand a Session a Connection (SQLAlchemy's documented routing hook); the
    session then runs on it without closing it, so the session closes it itself.
    """

    def __init__(self, *args: Any, router: ReadRouter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._router = router
        self._routed: Connection | None = None

    def get_bind(self, mapper: Any = None, **kwargs: Any) -> Any:
        if kwargs.get("bind") is not None:
            return super().get_bind(mapper, **kwargs)
        if self._routed is None:
            self._routed = self._router.connect()
        return self._routed

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()

    def invalidate(self) -> None:
        try:
            super().invalidate()
        finally:
            self._release()

    def reset(self) -> None:
        try:
            super().reset()
        finally:
            self._release()

    def _release(self) -> None:
        routed, self._routed = self._routed, None
        if routed is not None:
            routed.close()  # back to its pool (autocommit: nothing to roll back)


def make_read_session_maker(
    primary: Engine, replicas: Sequence[Engine], state: ReplicaSet
) -> sessionmaker[Session]:
    """The read sessions' maker: on the primary as before without replicas, else routed."""
    if not replicas:
        return make_session_maker(primary, session_class=ReadOnlySession)
    router = ReadRouter(state, replicas, primary)
    return sessionmaker(class_=RoutedReadSession, router=router, **SESSION_OPTIONS)


def make_async_read_session_maker(
    primary: AsyncEngine, replicas: Sequence[AsyncEngine], state: ReplicaSet
) -> async_sessionmaker[AsyncSession]:
    """The async twin: the same router, over the async engines' sync faces (the session's
    get_bind runs inside SQLAlchemy's greenlet, where they do asyncpg's I/O)."""
    if not replicas:
        return make_async_session_maker(primary, sync_session_class=ReadOnlySession)
    router = ReadRouter(state, [engine.sync_engine for engine in replicas], primary.sync_engine)
    return async_sessionmaker(
        class_=AsyncSession, sync_session_class=RoutedReadSession, router=router, **SESSION_OPTIONS
    )


def build_replica_engines(
    factory: Callable[..., Any],
    add: Callable[[Any], Any],
    plans: Sequence[ConnectionPlan],
    state: ReplicaSet,
) -> tuple[Any, ...]:
    """One read-only engine per replica's plan (plan_replicas) from `factory` (sync or async),
    each recorded by `add` (for disposal) and watched: a dead connection marks its replica
    unavailable."""
    engines = []
    for index, plan in enumerate(plans):
        engine = add(factory(plan, read_only=True))
        sync_engine = getattr(engine, "sync_engine", engine)
        watch(sync_engine, state, index)
        engines.append(engine)
    return tuple(engines)


def watch(engine: Engine, state: ReplicaSet, index: int) -> None:
    @event.listens_for(engine, "handle_error")
    def disconnected(context: ExceptionContext) -> None:
        # A statement on an established connection (a connect failure is the router's to see).
        if context.is_disconnect and context.connection is not None:
            state.unavailable(index, context.sqlalchemy_exception or context.original_exception)

    @event.listens_for(engine, "checkout")
    def closed_by_server(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        # A replica that went away closed its idle connections (a FATAL message, then EOF):
        # seen here without a round trip, so the pool connects afresh, and the router moves
        # on if that fails, before the read runs on a dead connection (a 503). The whole pool
        # goes: its other connections died with the same server.
        if _closed_by_server(record.driver_connection):
            raise InvalidatePoolError("the server closed this idle connection")


def _closed_by_server(driver_connection: Any) -> bool:
    if isinstance(driver_connection, psycopg2.extensions.connection):
        # Whatever an idle connection's server sent is read: a notice is harmless; a server
        # going away sends its FATAL message (which psycopg2 files as a notice), then EOF,
        # which the next read raises. Still talking after that: not an idle connection.
        for _ in range(3):
            if driver_connection.closed:
                return True
            # poll, not select: select() refuses a descriptor above 1023 (FD_SETSIZE), which a
            # process holding more than 1024 files gives its new sockets.
            poller = select.poll()
            poller.register(driver_connection.fileno(), select.POLLIN)
            if not poller.poll(0):
                return False
            try:
                driver_connection.poll()
            except psycopg2.Error:
                return True
        return True
    pgconn = getattr(driver_connection, "pgconn", None)
    if pgconn is not None:
        return _psycopg_closed_by_server(driver_connection, pgconn)
    # asyncpg: the event loop saw the EOF when it came (connection_lost).
    return bool(driver_connection.is_closed())


def _psycopg_closed_by_server(driver_connection: Any, pgconn: Any) -> bool:
    """psycopg 3, sync or async (an idle AsyncConnection has no reader on the loop either): as
    for psycopg2, read what an idle connection's server sent, through libpq (pgconn, psycopg's
    documented low-level object; the Connection has no call that reads without a query).
    libpq keeps the socket non-blocking, so PQconsumeInput never waits; what it reads stays in
    libpq's buffer, for the next query to handle as psycopg does (a FATAL while idle is a
    notice); at EOF it fails and marks the connection bad."""
    import psycopg  # here only: psycopg is an extra, and this is a psycopg connection

    for _ in range(3):
        if driver_connection.closed:
            return True
        try:
            poller = select.poll()
            poller.register(pgconn.socket, select.POLLIN)  # raises once libpq dropped it
            if not poller.poll(0):
                return False
            pgconn.consume_input()
        except psycopg.OperationalError:
            return True
    return True
