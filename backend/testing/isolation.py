"""Transaction mode: every session the app opens during a test joins one outer transaction.

The test holds one connection with a transaction begun on it; each session — sync or async,
write or read, the app's or the test's own — is bound to that connection with
`join_transaction_mode="create_savepoint"` (SQLAlchemy's "Joining a Session into an External
Transaction"): its commit releases a SAVEPOINT, its rollback or close rolls back to one, and
the test's end rolls the outer transaction back. Nothing is ever committed.

- One connection, so sync and async sessions see each other's writes. Async sessions run it
  too: an AsyncSession drives its sync Session in a greenlet, and that Session, bound to this
  psycopg2 connection, simply blocks the event loop for each round trip. That works on any
  event loop, so a loop per test or per session makes no difference; what is not exercised is
  asyncpg itself (use database mode, `backend_transactional_db`, for that).
- Read sessions keep `ReadOnlySession` (a flush refuses writes) and, as the read engine does,
  refuse statements that are not reads before they are sent. In production they run in
  autocommit, one transaction per statement; here each statement gets a SAVEPOINT of its own,
  released at once. A read session holding a SAVEPOINT for the whole request would break: a
  write session that began first releases its own SAVEPOINT on commit, and PostgreSQL releases
  every SAVEPOINT made after it with it, so the read session's close would then fail.
"""

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection, Result
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, sessionmaker
from sqlalchemy.sql import ClauseElement
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db.readonly import ReadOnlyError, ReadOnlySession
from backend.db.readsql import not_a_read
from backend.db.scope import SESSION_OPTIONS

JOINED: dict[str, Any] = {**SESSION_OPTIONS, "join_transaction_mode": "create_savepoint"}

# The container's providers the outer transaction replaces, and what each one makes.
MAKERS = ("session_maker", "read_session_maker", "async_session_maker", "async_read_session_maker")


class ReadOnlyTestSession(ReadOnlySession):
    """A read session inside the test's transaction: reads only, a SAVEPOINT per statement."""


@event.listens_for(ReadOnlyTestSession, "do_orm_execute")
def _each_statement_on_its_own(state: ORMExecuteState) -> Result[Any] | None:
    session = state.session
    statement = state.statement
    if isinstance(statement, ClauseElement):
        sql = str(statement.compile(dialect=session.get_bind().dialect))
    else:
        sql = str(statement)
    if reason := not_a_read(sql):
        raise ReadOnlyError(f"a read-only engine does not run {reason}: write through SessionDep")
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
        may get this connection from the pool, starts from nothing. A connection that fails
        either is closed rather than pooled.
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
