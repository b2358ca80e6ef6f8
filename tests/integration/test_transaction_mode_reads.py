"""Read sessions in the plugin's transaction mode behave as production's: they do not see a
request's uncommitted writes (refused, pointing to database mode, where they cannot be
hidden), they read what was committed, and nothing writes through them."""

import sys
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter
from fastapi.testclient import TestClient

from backend import (
    AsyncReadSessionDep,
    AsyncSessionDep,
    Container,
    ReadSessionDep,
    SessionDep,
)
from backend.db.container import use_database
from backend.db.engines.readonly import ReadOnlyError
from backend.testing.databases import TestDatabase
from backend.testing.isolation import OuterTransaction
from tests.conftest import serving

router = APIRouter()

INSERT = sa.text("INSERT INTO read_probe VALUES (:name)")
COUNT = sa.text("SELECT count(*) FROM read_probe")


@router.post("/sync/write-read/{commit}")
@inject
def write_then_read(commit: bool, session: SessionDep, reads: ReadSessionDep) -> int:
    session.execute(INSERT, {"name": "tea"})
    if commit:
        session.commit()
    seen = int(reads.scalar(COUNT) or 0)
    session.commit()
    return seen


@router.post("/async/write-read/{commit}")
@inject
async def write_then_read_async(
    commit: bool, session: AsyncSessionDep, reads: AsyncReadSessionDep
) -> int:
    await session.execute(INSERT, {"name": "tea"})
    if commit:
        await session.commit()
    seen = int(await reads.scalar(COUNT) or 0)
    await session.commit()
    return seen


@router.post("/sync/insert-on-the-read-connection")
@inject
def insert_on_the_read_connection(reads: ReadSessionDep) -> None:
    reads.connection().execute(INSERT, {"name": "tea"})


@router.get("/sync/count")
@inject
def count(reads: ReadSessionDep) -> int:
    return int(reads.connection().scalar(COUNT) or 0)


@pytest.fixture
def psycopg_outer_engine(backend_db: TestDatabase) -> Iterator[sa.Engine]:
    """The test's outer connection on psycopg 3, whatever the run's driver: the app's sync
    engine as `postgresql+psycopg://` builds it."""
    container = Container()
    use_database(container, backend_db.url.set(drivername="postgresql+psycopg"))
    engine = container.engine()
    assert engine.dialect.driver == "psycopg"
    yield engine
    engine.dispose()


@pytest.fixture(params=["transaction", "transaction on psycopg 3", "database"])
def database(request: pytest.FixtureRequest) -> TestDatabase:
    fixture = "backend_transactional_db" if request.param == "database" else "backend_db"
    database: TestDatabase = request.getfixturevalue(fixture)
    if request.param == "transaction on psycopg 3":
        pytest.importorskip("psycopg")
        database.outer_engine = request.getfixturevalue("psycopg_outer_engine")
    with database.session() as session:
        session.execute(sa.text("CREATE TABLE read_probe (name text)"))
        session.commit()
        if request.param == "transaction on psycopg 3":
            assert session.connection().dialect.driver == "psycopg"
    return database


@pytest.fixture
def client(database: TestDatabase) -> Iterator[TestClient]:
    container = Container()
    database.bind(container)
    try:
        with TestClient(serving(container, sys.modules[__name__])) as client:
            yield client
    finally:
        database.unbind(container)


def test_a_read_session_does_not_see_the_requests_uncommitted_write(
    client: TestClient, database: TestDatabase, flavour: str
) -> None:
    if database.mode == "database":  # production's answer: the write was not committed yet
        assert client.post(f"/{flavour}/write-read/false").json() == 0
        return
    # Transaction mode cannot hide it, on the test's one connection: it says so.
    with pytest.raises(RuntimeError, match="database mode") as refused:
        client.post(f"/{flavour}/write-read/false")
    assert "backend_transactional_db" in str(refused.value)


def test_a_read_session_sees_what_was_committed_before_it_read(
    client: TestClient, flavour: str
) -> None:
    assert client.post(f"/{flavour}/write-read/true").json() == 1


def test_the_read_sessions_own_connection_refuses_writes(
    client: TestClient, database: TestDatabase
) -> None:
    with pytest.raises(ReadOnlyError):
        client.post("/sync/insert-on-the-read-connection")
    with database.session() as session:
        assert session.scalar(COUNT) == 0
    assert client.get("/sync/count").json() == 0


def test_a_psycopg_outer_connection_comes_back_clean_to_the_next_test(
    psycopg_outer_engine: sa.Engine,
) -> None:
    """DISCARD ALL at each test's end also drops what psycopg 3 prepared (a statement run five
    times on a direct host): psycopg sees it and prepares afresh on the next test's connection,
    which the pool hands back (one connection here)."""
    for _ in range(2):
        outer = OuterTransaction(psycopg_outer_engine)
        with outer.makers["session_maker"]() as session:
            for _ in range(7):
                assert session.scalar(sa.text("SELECT 1")) == 1
        with outer.makers["read_session_maker"]() as reads:
            for _ in range(7):
                assert reads.scalar(sa.text("SELECT 2")) == 2
            with pytest.raises(ReadOnlyError):
                reads.execute(INSERT, {"name": "tea"})
        outer.end()
    pool = psycopg_outer_engine.pool
    assert isinstance(pool, sa.QueuePool)
    assert pool.checkedout() == 0
