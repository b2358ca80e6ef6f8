"""Transaction mode: every session the app opens during a test joins one outer transaction.

The test holds one connection with a transaction begun on it; each session — sync or async,
write or read, the app's or the test's own — is bound to that connection with
`join_transaction_mode="create_savepoint"` (SQLAlchemy's "Joining a Session into an External
Transaction"): its commit releases a SAVEPOINT, its rollback or close rolls back to one, and
the test's end rolls the outer transaction back. Nothing is ever committed.

- One connection, from the app's sync engine (psycopg2, or psycopg 3), so sync and async
  sessions see each other's writes. Async sessions run it too: an AsyncSession drives its sync
  Session in a greenlet, and that Session, bound to this sync connection, simply blocks the
  event loop for each round trip. That works on any event loop, so a loop per test or per
  session makes no difference; what is not exercised is the async driver itself (asyncpg, or
  psycopg's AsyncConnection: use database mode, `backend_transactional_db`, for that).
- Read sessions keep `ReadOnlySession` (a flush refuses writes) and, as the read engine does,
  refuse statements that are not reads before they are sent, whichever way they come (the
  session's `execute`, or its `connection()`), and the server refuses them too (each read's
  SAVEPOINT is READ ONLY, as production's read connections are). In production they run in
  autocommit, one transaction per statement; here each statement gets a SAVEPOINT of its own,
  released at once. A read session holding a SAVEPOINT for the whole request would break: a
  write session that began first releases its own SAVEPOINT on commit, and PostgreSQL releases
  every SAVEPOINT made after it with it, so the read session's close would then fail.
- In production a read session has a connection of its own, and does not see what a write
  session of the same request has written and not yet committed. On the test's one
  connection it would: so a read while such writes are pending is refused
  (`UncommittedWriteError`), pointing to database mode, rather than passing on behaviour
  production does not have. Writes committed before (the test's own, a route's earlier
  commit) are read as production reads them.
"""

import re
import weakref
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection, Result
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, sessionmaker
from sqlalchemy.sql import ClauseElement
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db.engines.readonly import ReadOnlyError, ReadOnlySession
from backend.db.engines.readsql import not_a_read
from backend.db.sessions.scope import SESSION_OPTIONS

JOINED: dict[str, Any] = {**SESSION_OPTIONS, "join_transaction_mode": "create_savepoint"}

# The container's providers the outer transaction replaces, and what each one makes.
MAKERS = ("session_maker", "read_session_maker", "async_session_maker", "async_read_session_maker")


class UncommittedWriteError(RuntimeError):
    """A read session, in transaction mode, would see writes production's would not."""


UNCOMMITTED = (
    "in transaction mode, this read session (ReadSessionDep) would see writes not committed "
    "yet (a SessionDep that wrote and has not committed), which production's read session, on "
    "a connection of its own, does not see: commit them before reading, or run this test in "
    "database mode (the backend_transactional_db fixture), where reads are as in production"
)

# Statements the sessions' own SAVEPOINTs are made of: neither a read nor a write of theirs.
_TRANSACTION_CONTROL = re.compile(
    r"\s*(?:SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT|SET TRANSACTION READ ONLY\s*$)",
    re.IGNORECASE,
)
# connection.info keys: the read sessions' SAVEPOINTs, and those a write was made in.
_READS = "backend_read_savepoints"
_WRITES = "backend_written_savepoints"


def _refuse(reason: str) -> ReadOnlyError:
    return ReadOnlyError(f"a read-only engine does not run {reason}: write through SessionDep")


class _ReadConnection:
    """What a read session's `connection()` gives: each statement goes through the session, so
    each is checked and runs in a READ ONLY SAVEPOINT of its own, as `execute` does."""

    def __init__(self, session: "ReadOnlyTestSession") -> None:
        self._session = session

    def execute(self, statement: Any, parameters: Any = None, **options: Any) -> Any:
        return self._session.execute(statement, parameters, **options)

    def scalar(self, statement: Any, parameters: Any = None, **options: Any) -> Any:
        return self.execute(statement, parameters, **options).scalar()

    def scalars(self, statement: Any, parameters: Any = None, **options: Any) -> Any:
        return self.execute(statement, parameters, **options).scalars()

    def exec_driver_sql(self, statement: str, parameters: Any = None, **options: Any) -> Any:
        if reason := not_a_read(statement):
            raise _refuse(reason)
        connection = Session.connection(self._session)
        return connection.exec_driver_sql(statement, parameters, **options)

    def __getattr__(self, name: str) -> Any:
        # Anything else, on the connection itself: its SAVEPOINT, READ ONLY, stays open.
        return getattr(Session.connection(self._session), name)


class ReadOnlyTestSession(ReadOnlySession):
    """A read session inside the test's transaction: reads only, a SAVEPOINT per statement."""

    def connection(self, *args: Any, **kwargs: Any) -> Any:
        return _ReadConnection(self)


@event.listens_for(ReadOnlyTestSession, "after_begin")
def _read_only_savepoint(session: Session, transaction: Any, connection: Connection) -> None:
    # The server's guard, as production's read connections have it: PostgreSQL gives a
    # SAVEPOINT's READ ONLY back to its parent's state when it ends, whichever way.
    nested = connection.get_nested_transaction()
    if nested is not None:
        connection.info.setdefault(_READS, weakref.WeakSet()).add(nested)
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")


def _watch_statements(connection: Connection) -> None:
    """Every statement on the test's connection: a read session's are refused unless reads,
    and while a write is pending in an open SAVEPOINT; a write session's mark their SAVEPOINT.
    """

    @event.listens_for(connection, "before_cursor_execute")
    def each(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if _TRANSACTION_CONTROL.match(statement):
            return
        nested = conn.get_nested_transaction()
        written: weakref.WeakSet[Any] = conn.info.setdefault(_WRITES, weakref.WeakSet())
        if nested is not None and nested in conn.info.get(_READS, ()):
            if reason := not_a_read(statement):
                raise _refuse(reason)
            if any(savepoint.is_active for savepoint in written):
                raise UncommittedWriteError(UNCOMMITTED)
        elif nested is not None and not_a_read(statement):
            written.add(nested)  # pending until that SAVEPOINT is released or rolled back


@event.listens_for(ReadOnlyTestSession, "do_orm_execute")
def _each_statement_on_its_own(state: ORMExecuteState) -> Result[Any] | None:
    session = state.session
    statement = state.statement
    if isinstance(statement, ClauseElement):
        sql = str(statement.compile(dialect=session.get_bind().dialect))
    else:
        sql = str(statement)
    if reason := not_a_read(sql):
        raise _refuse(reason)
    if session.in_transaction():
        return None  # inside `with session.begin():`, or a load run by a statement below
    try:
        rows = state.invoke_statement().freeze()  # every row read before the RELEASE
    except BaseException:
        session.rollback()  # to this statement's SAVEPOINT only
        raise
    session.commit()
    return rows()


def _bound(base: type[Session], connection: Connection) -> type[Session]:
    """`base`, always bound to `connection`: AsyncSession hands its sync class no bind of ours
    (it accepts AsyncEngine and AsyncConnection only)."""

    def __init__(self: Session, bind: Any = None, **options: Any) -> None:
        base.__init__(self, bind=connection, **options)

    return type(base.__name__, (base,), {"__init__": __init__})


class OuterTransaction:
    """One connection from `engine`, a transaction begun on it, and session makers joining it."""

    def __init__(self, engine: Engine) -> None:
        self.connection = engine.connect()
        self.transaction = self.connection.begin()
        connection = self.connection
        _watch_statements(connection)
        self.makers: dict[str, Any] = {
            "session_maker": sessionmaker(connection, class_=Session, **JOINED),
            "read_session_maker": sessionmaker(connection, class_=ReadOnlyTestSession, **JOINED),
            "async_session_maker": async_sessionmaker(
                class_=AsyncSession, sync_session_class=_bound(Session, connection), **JOINED
            ),
            "async_read_session_maker": async_sessionmaker(
                class_=AsyncSession,
                sync_session_class=_bound(ReadOnlyTestSession, connection),
                **JOINED,
            ),
        }

    def end(self) -> None:
        """Roll everything back and give the connection back, as clean as it came.

        ROLLBACK undoes SET and temporary tables, not what lives in the server session:
        advisory locks, SQL PREPAREs, LISTEN. DISCARD ALL ends those, so the next test, which
        may get this connection from the pool, starts from nothing (psycopg 3 sees it in the
        command's status and forgets what it had prepared). A connection that fails either is
        closed rather than pooled.
        """
        try:
            if self.transaction.is_active:
                self.transaction.rollback()
            driver = self.connection.connection.dbapi_connection
            assert driver is not None
            driver.autocommit = True  # DISCARD ALL runs outside a transaction block only
            cursor = driver.cursor()
            try:
                cursor.execute("DISCARD ALL")
            finally:
                cursor.close()
                driver.autocommit = False
        except Exception:
            self.connection.invalidate()
            raise
        finally:
            self.connection.close()
