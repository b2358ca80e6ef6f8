"""psycopg 3 read engines, sync and async, direct and behind the pooler: the server refuses
writes, the statement check reads what psycopg sends, and a read costs one round trip.

Engines are built here as build.py builds a read engine (autocommit; the read-only startup
option on a direct host; refuse_writes and keep_server_guard)."""

import statistics
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.db.engines.readonly import (
    READ_ONLY_OPTIONS,
    ReadOnlyError,
    keep_server_guard,
    refuse_writes,
)
from tests.integration.test_sessions import Note

psycopg = pytest.importorskip("psycopg")

assert Note.__tablename__ == "test_note"  # the model puts the table in the tests' schema
WRITE = "INSERT INTO test_note (key, text) VALUES ('written', 'by a read')"


def read_engine_options(url: URL, *, pooler: bool) -> tuple[URL, dict[str, Any]]:
    url = url.set(drivername="postgresql+psycopg")
    if not pooler:
        url = url.update_query_dict({"options": READ_ONLY_OPTIONS})
    options = {"isolation_level": "AUTOCOMMIT", "connect_args": {"prepare_threshold": None}}
    return url, {**options, "pool_size": 1, "max_overflow": 0}


def guarded(engine: sa.Engine, *, pooler: bool) -> None:
    refuse_writes(engine, through_pooler=pooler)
    if not pooler:
        keep_server_guard(engine)


def sync_read_engine(url: URL, *, pooler: bool) -> sa.Engine:
    url, options = read_engine_options(url, pooler=pooler)
    engine = sa.create_engine(url, **options)
    guarded(engine, pooler=pooler)
    return engine


def async_read_engine(url: URL, *, pooler: bool) -> AsyncEngine:
    url, options = read_engine_options(url, pooler=pooler)
    engine = create_async_engine(url, **options)
    guarded(engine.sync_engine, pooler=pooler)
    return engine


@pytest.fixture(params=["direct", "pooler"])
def endpoint(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(endpoint: str, database_url: URL, request: pytest.FixtureRequest) -> URL:
    return request.getfixturevalue("pooler_url") if endpoint == "pooler" else database_url


@pytest.fixture
def engine(url: URL, endpoint: str) -> Iterator[sa.Engine]:
    engine = sync_read_engine(url, pooler=endpoint == "pooler")
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(url: URL, endpoint: str) -> AsyncIterator[AsyncEngine]:
    engine = async_read_engine(url, pooler=endpoint == "pooler")
    yield engine
    await engine.dispose()


def notes(database_url: URL) -> int:
    admin = sa.create_engine(database_url, poolclass=sa.NullPool)
    with admin.connect() as connection:
        count = int(connection.scalar(sa.text("SELECT count(*) FROM test_note")) or 0)
    admin.dispose()
    return count


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_reads_run_and_writes_are_refused_first_by_the_check(
    engine: sa.Engine, async_engine: AsyncEngine, database_url: URL, flavour: str
) -> None:
    statement = sa.text("SELECT CAST(:word AS text) || '%', count(*) FROM test_note")
    if flavour == "sync":
        with engine.connect() as connection:
            assert tuple(connection.execute(statement, {"word": "100"}).one()) == ("100%", 0)
            with pytest.raises(ReadOnlyError, match="does not run 'INSERT'"):
                connection.exec_driver_sql(WRITE)
            assert connection.scalar(sa.text("SELECT 1")) == 1
    else:
        async with async_engine.connect() as connection:
            assert tuple((await connection.execute(statement, {"word": "100"})).one()) == (
                "100%",
                0,
            )
            with pytest.raises(ReadOnlyError, match="does not run 'INSERT'"):
                await connection.exec_driver_sql(WRITE)
            assert await connection.scalar(sa.text("SELECT 1")) == 1
    assert notes(database_url) == 0


def check_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.db.engines import readonly

    monkeypatch.setattr(readonly, "not_a_read_as_sent", lambda sql: None)


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_the_server_refuses_what_the_check_let_through_and_the_next_read_runs(
    monkeypatch: pytest.MonkeyPatch,
    engine: sa.Engine,
    async_engine: AsyncEngine,
    database_url: URL,
    flavour: str,
) -> None:
    check_nothing(monkeypatch)
    write = sa.text("INSERT INTO test_note (key, text) VALUES (:key, 'by a read')")
    refused = pytest.raises(sa.exc.DBAPIError, match="read-only transaction")
    if flavour == "sync":
        with engine.connect() as connection:
            with refused:
                connection.execute(write, {"key": "bound"})
            with refused:
                connection.exec_driver_sql(WRITE)
            # The failed transaction was ended: the same connection reads on.
            assert connection.scalar(sa.text("SELECT 1")) == 1
    else:
        async with async_engine.connect() as connection:
            with refused:
                await connection.execute(write, {"key": "bound"})
            with refused:
                await connection.exec_driver_sql(WRITE)
            assert await connection.scalar(sa.text("SELECT 1")) == 1
    assert notes(database_url) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("pooler", [False, True], ids=["direct", "pooler"])
@pytest.mark.parametrize(
    ("flavour", "stream", "flights"),
    [
        # The statement alone: direct, the server's read-only default came at startup; behind
        # the pooler BEGIN READ ONLY and COMMIT ride in the statement's pipeline.
        ("sync", False, 1),
        ("async", False, 1),
        # A server-side cursor: BEGIN READ ONLY, DECLARE, its portal described (psycopg asks
        # apart), FETCH, CLOSE, and the ROLLBACK of the pool's reset.
        ("sync", True, 6),
        ("async", True, 6),
    ],
)
async def test_round_trips_of_a_warm_read(
    postgres: Any, front_url: URL, pooler: bool, flavour: str, stream: bool, flights: int
) -> None:
    front = postgres.front
    one = sa.text("SELECT 1")
    options = {"stream_results": True} if stream else {}
    if flavour == "sync":
        engine = sync_read_engine(front_url, pooler=pooler)

        def read() -> None:
            with engine.connect() as connection:
                assert connection.execution_options(**options).execute(one).scalar() == 1

        for _ in range(3):
            read()
        counted = []
        for _ in range(10):
            front.reset_traffic()
            read()
            counted.append(front.traffic.flights_up)
        engine.dispose()
    else:
        async_engine = async_read_engine(front_url, pooler=pooler)

        async def read_async() -> None:
            async with async_engine.connect() as connection:
                if stream:
                    # Not AsyncResult.scalar(): before SQLAlchemy 2.0.39 it fails on any
                    # driver (sqlalchemy/sqlalchemy#12338), and 2.0.30 is our floor.
                    assert await (await connection.stream_scalars(one)).first() == 1
                else:
                    assert await connection.scalar(one) == 1

        for _ in range(3):
            await read_async()
        counted = []
        for _ in range(10):
            front.reset_traffic()
            await read_async()
            counted.append(front.traffic.flights_up)
        await async_engine.dispose()
    # The typical read's. The front counts a turn whenever the client speaks after the server
    # did. psycopg 3.3.6 at times writes the last of a pipeline after the server has begun to
    # answer, something it awaits no answer to: that read counts 2 and the next one 0 (their
    # client still waited once each), where psycopg 3.3.9 counts 1 and 1.
    assert statistics.median(counted) == flights, counted


def test_behind_the_pooler_sql_on_the_raw_connection_is_read_only_too(
    pooler_url: URL, database_url: URL
) -> None:
    """The guard is the connection's cursor class: no SQLAlchemy event needs to see the SQL."""
    engine = sync_read_engine(pooler_url, pooler=True)
    try:
        with engine.connect() as connection:
            driver: Any = connection.connection.driver_connection
            with pytest.raises(Exception, match="read-only transaction"):
                driver.execute(WRITE)
            read_only = driver.execute("SELECT current_setting('transaction_read_only')")
            assert read_only.fetchone() == ("on",)
    finally:
        engine.dispose()
    assert notes(database_url) == 0


def test_behind_the_pooler_a_failure_before_anything_runs_leaves_the_connection_usable(
    pooler_url: URL,
) -> None:
    """psycopg refuses a bad placeholder after BEGIN READ ONLY was queued: that transaction
    is ended, or the next read would meet InFailedSqlTransaction or an open transaction."""
    engine = sync_read_engine(pooler_url, pooler=True)
    try:
        with engine.connect() as connection:
            with pytest.raises(sa.exc.ProgrammingError, match="placeholders"):
                connection.exec_driver_sql("SELECT %d", (1,))
            driver: Any = connection.connection.driver_connection
            assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert connection.scalar(sa.text("SELECT 1")) == 1
            # executemany too runs in its READ ONLY pipeline.
            connection.exec_driver_sql("SELECT %(n)s::int", [{"n": 1}, {"n": 2}])
            assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        engine.dispose()


def test_behind_the_pooler_the_pre_ping_runs_in_the_pipeline(pooler_url: URL) -> None:
    url, options = read_engine_options(pooler_url, pooler=True)
    engine = sa.create_engine(url, **options, pool_pre_ping=True)
    guarded(engine, pooler=True)
    try:
        for _ in range(3):
            with engine.connect() as connection:
                assert connection.scalar(sa.text("SELECT 1")) == 1
    finally:
        engine.dispose()


def test_a_cursor_class_set_over_the_guard_is_refused(pooler_url: URL) -> None:
    engine = sync_read_engine(pooler_url, pooler=True)
    try:
        with engine.connect() as connection:
            driver: Any = connection.connection.driver_connection
            driver.cursor_factory = psycopg.Cursor
            with pytest.raises(ReadOnlyError, match="cursor_factory was replaced"):
                connection.scalar(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def test_the_layers_read_engine_runs_the_pipeline_inside_the_statement_deadline(
    monkeypatch: pytest.MonkeyPatch, pooler_url: URL
) -> None:
    """The layer's own cursor classes (the statement deadline's) wrap the guard's: the
    deadline covers the pipeline's round trip, not only the queueing of its statement."""
    from backend import Container
    from backend.db.engines.psycopg_deadline import BoundedCursor
    from backend.db.engines.readonly_psycopg import PipelinedReadCursor

    url = pooler_url.set(drivername="postgresql+psycopg")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("DATABASE_POOLER", "pgbouncer")
    engine = Container().read_engine()
    try:
        with engine.connect() as connection:
            guard = connection.scalar(sa.text("SELECT current_setting('transaction_read_only')"))
            assert guard == "on"
            mro = type(connection.connection.driver_connection.cursor()).__mro__  # type: ignore[union-attr]
            assert mro.index(BoundedCursor) < mro.index(PipelinedReadCursor)
    finally:
        engine.dispose()
