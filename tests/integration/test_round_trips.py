"""What crosses the wire per request, counted at the TLS front: the cost model behind the speed.

A flight is one client-to-server write. On a WAN link to Neon each costs a round trip.
"""

import sys

import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend import (
    AsyncReadSessionDep,
    AsyncSessionDep,
    Container,
    ReadSessionDep,
    SessionDep,
)
from backend.db.engines.readonly import ReadOnlyError
from backend.testing.drivers import run_driver
from backend.testing.front import TlsFront
from backend.testing.postgres import TestServer
from tests.conftest import serving, use_database
from tests.integration.test_sessions import Note

router = APIRouter()
ONE = sa.text("SELECT 1")


@router.get("/sync/one")
@inject
def one(session: SessionDep) -> int:
    return int(session.scalar(ONE) or 0)


@router.get("/async/one")
@inject
async def one_async(session: AsyncSessionDep) -> int:
    return int(await session.scalar(ONE) or 0)


@router.get("/sync/read/one")
@inject
def read_one(session: ReadSessionDep) -> int:
    return int(session.scalar(ONE) or 0)


@router.get("/async/read/one")
@inject
async def read_one_async(session: AsyncReadSessionDep) -> int:
    return int(await session.scalar(ONE) or 0)


@router.get("/sync/read/stream")
@inject
def read_streamed(session: ReadSessionDep) -> int:
    connection = session.connection(execution_options={"stream_results": True})
    return int(connection.execute(ONE).scalar() or 0)


@router.get("/async/read/stream")
@inject
async def read_streamed_async(session: AsyncReadSessionDep) -> int:
    return int(await (await session.stream_scalars(ONE)).one())


@router.post("/sync/read/note")
@inject
def write_through_read_session(session: ReadSessionDep) -> None:
    session.add(Note(key="sneaky", text="write"))
    session.commit()


@router.post("/async/read/sql")
@inject
async def write_sql_through_read_session(session: AsyncReadSessionDep) -> None:
    connection = await session.connection()
    await connection.execute(sa.text("INSERT INTO test_note (key, text) VALUES ('raw', 'sql')"))


@pytest.fixture
def front(postgres: TestServer, front_url: URL) -> TlsFront:
    assert postgres.front is not None
    return postgres.front


def client_through(
    monkeypatch: pytest.MonkeyPatch, url: URL, **settings: str
) -> tuple[FastAPI, Container]:
    use_database(monkeypatch, url, **settings)
    container = Container()
    app = serving(container, sys.modules[__name__])
    return app, container


def flights_per_request(client: TestClient, front: TlsFront, path: str) -> float:
    # Warm: connected, recently used, and prepared (psycopg 3 prepares a statement at its
    # fifth run on a direct host, which costs that run one more flight).
    for _ in range(6):
        assert client.get(path).status_code == 200
    front.reset_traffic()
    for _ in range(20):
        assert client.get(path).status_code == 200
    return front.traffic.flights_up / 20


@pytest.mark.parametrize(
    ("path", "settings", "flights"),
    [
        # (psycopg2 and asyncpg, psycopg 3 sync and async): the run's drivers
        # (BACKEND_TEST_DRIVER) pick one.
        # BEGIN, SELECT, ROLLBACK as the drivers send them; no ping for a warm connection.
        ("/sync/one", {}, (3, 3)),
        ("/async/one", {}, (3, 3)),
        # SQLAlchemy's pool_pre_ping, on every checkout: one more for psycopg2 and psycopg 3,
        # three for asyncpg, whose ping SQLAlchemy wraps in BEGIN/ROLLBACK for PgBouncer's sake
        # (#10226).
        ("/sync/one", {"ping_idle_after": "0"}, (4, 4)),
        ("/async/one", {"ping_idle_after": "0"}, (6, 4)),
        # A read-only session: the statement alone — psycopg2's carries SET TRANSACTION READ
        # ONLY in the same Query; asyncpg's and psycopg 3's read-only default came in the
        # startup packet.
        ("/sync/read/one", {}, (1, 1)),
        ("/async/read/one", {}, (1, 1)),
        # As behind Neon's pooler (no startup options; asyncpg without its statement cache,
        # so each statement is parsed, then bound and run: two). psycopg2: the same one flight.
        # asyncpg: its READ ONLY transaction's BEGIN, and its ROLLBACK when the session closes
        # (after the response). psycopg 3: BEGIN READ ONLY, the statement and COMMIT in one
        # pipeline, one flight.
        ("/sync/read/one", {"pooler": "pgbouncer"}, (1, 1)),
        ("/async/read/one", {"pooler": "pgbouncer"}, (4, 1)),
        # Streamed (a server-side cursor): a READ ONLY transaction. psycopg2: BEGIN READ ONLY,
        # DECLARE, FETCH, CLOSE, ROLLBACK. asyncpg: BEGIN READ ONLY, the statement parsed and its
        # portal bound, a fetch, ROLLBACK. psycopg 3: BEGIN READ ONLY, DECLARE, the portal
        # described, FETCH (async: one() fetches again, to see no second row), CLOSE, ROLLBACK.
        ("/sync/read/stream", {}, (5, 6)),
        ("/async/read/stream", {}, (4, 7)),
    ],
)
def test_round_trips_of_a_warm_request(
    monkeypatch: pytest.MonkeyPatch,
    front: TlsFront,
    front_url: URL,
    path: str,
    settings: dict[str, str],
    flights: tuple[int, int],
) -> None:
    app, _ = client_through(monkeypatch, front_url, **settings)
    with TestClient(app) as client:
        assert flights_per_request(client, front, path) == flights[run_driver() == "psycopg"]


def test_a_read_session_refuses_orm_writes(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    app, _ = client_through(monkeypatch, database_url)
    with TestClient(app) as client, pytest.raises(ReadOnlyError, match="read-only session"):
        client.post("/sync/read/note")


@pytest.mark.parametrize("pooler", ["none", "pgbouncer"])
def test_a_read_engine_refuses_sql_writes(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, pooler: str
) -> None:
    # Behind a pooler the server cannot be told (no startup options): the client guard holds.
    app, _ = client_through(monkeypatch, database_url, pooler=pooler)
    with TestClient(app) as client, pytest.raises(ReadOnlyError, match="does not run 'INSERT'"):
        client.post("/async/read/sql")


def test_the_server_refuses_writes_on_a_direct_read_connection(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    use_database(monkeypatch, database_url)
    engine = Container().read_engine()
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with pytest.raises(Exception, match="read-only transaction") as refused:
            cursor.execute("INSERT INTO test_note (key, text) VALUES ('server', 'guard')")
        # ReadOnlySqlTransaction: psycopg2's pgcode, psycopg 3's sqlstate.
        error = refused.value
        assert (getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)) == "25006"
    engine.dispose()
