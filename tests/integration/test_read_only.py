"""Read-only sessions stay read-only, whatever a read route sends, on both paths.

Every read runs in a READ ONLY transaction, so the server refuses its writes, direct or behind
the pooler, whatever the statement check makes of it. Direct host: the server's read-only
default (default_transaction_read_only) also guards the raw driver connection, and a request
that switches it off — by a function the client check cannot see into, or on the driver's raw
connection — must not leave it off for the next request on the same pooled connection.
Pooler: the statement check refuses what would outlive the transaction (SET, …) and what would
end it, reading the statement as sent with PostgreSQL's parser.
"""

import contextlib
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter, Query
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlmodel import col, select

from backend import AsyncReadSessionDep, Container, ReadSessionDep, SessionDep
from backend.db.engines import readonly
from backend.db.engines.readonly import ReadOnlyError
from backend.testing.drivers import run_driver
from tests.conftest import serving, use_database
from tests.integration.test_sessions import Note

FLAVOURS = ["sync", "async"]
router = APIRouter()


def rows(result: sa.CursorResult[Any]) -> list[list[str]]:
    return [[str(value) for value in row] for row in result] if result.returns_rows else []


@router.get("/sync/read")
@inject
def read_sync(sql: Annotated[list[str], Query()], session: ReadSessionDep) -> list[list[str]]:
    """Runs each statement in turn, and answers the last one's rows."""
    connection = session.connection()
    return [rows(connection.execute(sa.text(statement))) for statement in sql][-1]


@router.get("/async/read")
@inject
async def read_async(
    sql: Annotated[list[str], Query()], session: AsyncReadSessionDep
) -> list[list[str]]:
    connection = await session.connection()
    return [rows(await connection.execute(sa.text(statement))) for statement in sql][-1]


@router.get("/sync/read/raw")
@inject
def raw_sync(sql: str, session: ReadSessionDep) -> None:
    """SQL on the driver's own connection, which no SQLAlchemy statement event sees."""
    cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(sql)


@router.get("/async/read/raw")
@inject
async def raw_async(sql: str, session: AsyncReadSessionDep) -> None:
    raw = await (await session.connection()).get_raw_connection()
    await raw.driver_connection.execute(sql)  # type: ignore[union-attr]


@router.get("/sync/read/like")
@inject
def like_sync(q: str, session: ReadSessionDep) -> int:
    """A placeholder inside a string literal: psycopg2 binds the value into the SQL text."""
    statement = sa.text("SELECT count(*) FROM test_note WHERE text LIKE '%:q%'")
    return int(session.scalar(statement, {"q": q}) or 0)


@router.get("/sync/read/stream")
@inject
def stream_sync(sql: str, session: ReadSessionDep) -> list[list[str]]:
    """A server-side cursor: what yield_per asks for."""
    connection = session.connection(execution_options={"stream_results": True})
    return rows(connection.execute(sa.text(sql)))


@router.get("/async/read/stream")
@inject
async def stream_async(sql: str, session: AsyncReadSessionDep) -> list[list[str]]:
    result = await session.stream(sa.text(sql))
    return [[str(value) for value in row] async for row in result]


@router.get("/sync/read/notes")
@inject
def notes_yield_per(session: ReadSessionDep) -> list[str]:
    return [note.key for note in session.exec(select(Note).execution_options(yield_per=1))]


@router.get("/async/read/notes")
@inject
async def notes_streamed(session: AsyncReadSessionDep) -> list[str]:
    result = await session.stream_scalars(select(Note).execution_options(yield_per=1))
    return [note.key async for note in result]


@router.get("/sync/write/timeout")
@inject
def write_session_timeout(session: SessionDep) -> str:
    return str(session.scalar(sa.text("SHOW statement_timeout")))


@router.get("/sync/read/union")
@inject
def union_sync(session: ReadSessionDep) -> int:
    # Compiles to "(SELECT … LIMIT …) UNION (SELECT … LIMIT …) LIMIT …": starts with "(".
    first, second = select(Note.id).limit(1), select(Note.id).order_by(col(Note.id)).limit(1)
    return len(session.connection().execute(sa.union(first, second).limit(2)).all())


@pytest.fixture
def admin(database_url: URL) -> Iterator[sa.Engine]:
    """The test's database as its owner sees it, outside the app."""
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with engine.connect() as connection:
        connection.exec_driver_sql("INSERT INTO test_note (key, text) VALUES ('kept', 'as is')")
        connection.exec_driver_sql("CREATE SEQUENCE note_ids")
        # What a read route may call and the client check cannot see into.
        connection.exec_driver_sql(
            "CREATE FUNCTION harmless_looking() RETURNS text LANGUAGE sql AS "
            "$$ SELECT set_config('default_transaction_read_only', 'off', false) $$"
        )
        connection.exec_driver_sql(
            "CREATE FUNCTION write_a_note() RETURNS int LANGUAGE sql AS "
            "$$ INSERT INTO test_note (key, text) VALUES ('written', 'by a read') RETURNING 1 $$"
        )
    yield engine
    engine.dispose()


def unchanged(admin: sa.Engine) -> bool:
    with admin.connect() as connection:
        notes = connection.execute(sa.text("SELECT key, text FROM test_note")).all()
        sequence = connection.execute(sa.text("SELECT last_value, is_called FROM note_ids")).one()
        copied = connection.scalar(sa.text("SELECT to_regclass('copy_of_note')"))
    return [tuple(note) for note in notes] == [("kept", "as is")] and (
        tuple(sequence) == (1, False) and copied is None
    )


def app_on(monkeypatch: pytest.MonkeyPatch, url: URL, **settings: str) -> TestClient:
    # One connection in the read pool: the next request gets the connection the last one used.
    use_database(monkeypatch, url, pool_size="1", max_overflow="0", **settings)
    return TestClient(serving(Container(), sys.modules[__name__]))


def app_behind_pooler(monkeypatch: pytest.MonkeyPatch, pooler_url: URL) -> TestClient:
    # The suite's PgBouncer is on 127.0.0.1, not an ep-…-pooler host: say what it is.
    return app_on(monkeypatch, pooler_url, pooler="pgbouncer")


# How a read request may switch the server's guard off, and whether that request fails at once:
# through SQLAlchemy the change is seen after the statement; on the driver's raw connection, no
# event sees it, and the connection is replaced when it is next checked out.
SWITCH_OFF = {
    "a function calling set_config": ("read", "SELECT harmless_looking()", True),
    "set_config on the raw connection": (
        "read/raw",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        False,
    ),
    "SET on the raw connection": ("read/raw", "SET default_transaction_read_only = off", False),
    "SET SESSION CHARACTERISTICS on the raw connection": (
        "read/raw",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        False,
    ),
}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    ("route", "attack", "refused_at_once"), SWITCH_OFF.values(), ids=SWITCH_OFF.keys()
)
def test_a_direct_read_connection_stays_read_only_for_the_next_request(
    monkeypatch: pytest.MonkeyPatch,
    database_url: URL,
    admin: sa.Engine,
    flavour: str,
    route: str,
    attack: str,
    refused_at_once: bool,
) -> None:
    refusal = pytest.raises(ReadOnlyError, match="switched default_transaction_read_only off")
    with app_on(monkeypatch, database_url) as client:
        with refusal if refused_at_once else contextlib.nullcontext():
            client.get(f"/{flavour}/{route}", params={"sql": attack})
        with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
            client.get(f"/{flavour}/read", params={"sql": "SELECT write_a_note()"})
        assert client.get(f"/{flavour}/read", params={"sql": "SELECT 1"}).json() == [["1"]]
    assert unchanged(admin)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_read_request_that_switches_the_guard_off_runs_nothing_more(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, admin: sa.Engine, flavour: str
) -> None:
    statements = ["SELECT harmless_looking()", "SELECT write_a_note()"]
    with app_on(monkeypatch, database_url) as client:
        with pytest.raises(ReadOnlyError, match="switched default_transaction_read_only off"):
            client.get(f"/{flavour}/read", params={"sql": statements})
        assert client.get(f"/{flavour}/read", params={"sql": "SELECT 1"}).json() == [["1"]]
    assert unchanged(admin)


POOLER_WRITES = [
    "SELECT nextval('note_ids')",
    "SELECT setval('note_ids', 42)",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT * INTO copy_of_note FROM test_note",
    "EXPLAIN ANALYZE INSERT INTO test_note (key, text) VALUES ('explained', 'away')",
    "EXPLAIN ANALYZE DELETE FROM test_note",
    "SELECT 1; DELETE FROM test_note",
    "WITH gone AS (DELETE FROM test_note RETURNING key) SELECT key FROM gone",
    "SELECT key FROM test_note FOR UPDATE",
]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("statement", POOLER_WRITES)
def test_behind_the_pooler_the_client_check_refuses_writes(
    monkeypatch: pytest.MonkeyPatch, pooler_url: URL, admin: sa.Engine, flavour: str, statement: str
) -> None:
    with app_behind_pooler(monkeypatch, pooler_url) as client, pytest.raises(ReadOnlyError):
        client.get(f"/{flavour}/read", params={"sql": statement})
    assert unchanged(admin)


POOLER_READS = {
    "/* the notes */ SELECT count(*) FROM test_note": [["1"]],
    "-- the notes\nSELECT count(*) FROM test_note": [["1"]],
    "WITH words AS (SELECT 'update' AS word) SELECT word FROM words": [["update"]],
    "SELECT currval('note_ids') IS NULL FROM test_note WHERE false": [],
}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(("statement", "answer"), POOLER_READS.items())
def test_behind_the_pooler_reads_run(
    monkeypatch: pytest.MonkeyPatch,
    pooler_url: URL,
    admin: sa.Engine,
    flavour: str,
    statement: str,
    answer: list[list[str]],
) -> None:
    with app_behind_pooler(monkeypatch, pooler_url) as client:
        assert client.get(f"/{flavour}/read", params={"sql": statement}).json() == answer


def test_behind_the_pooler_a_sqlalchemy_union_with_limits_runs(
    monkeypatch: pytest.MonkeyPatch, pooler_url: URL, admin: sa.Engine
) -> None:
    with app_behind_pooler(monkeypatch, pooler_url) as client:
        assert client.get("/sync/read/union").json() == 1


RECURSIVE = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3)"
# Writes after a recursive WITH's CYCLE or SEARCH clause, whose SET the hand-written lexer took
# for the end of the WITH list.
HIDDEN_WRITES = [
    f"{RECURSIVE} CYCLE n SET c USING p DELETE FROM test_note",
    f"{RECURSIVE} SEARCH DEPTH FIRST BY n SET ord UPDATE test_note SET text = 'changed'",
    f"EXPLAIN ANALYZE {RECURSIVE} CYCLE n SET c USING p DELETE FROM test_note",
    f"EXPLAIN ANALYZE {RECURSIVE} SEARCH DEPTH FIRST BY n SET ord UPDATE test_note SET key = 'x'",
]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("statement", HIDDEN_WRITES)
def test_behind_the_pooler_a_write_after_a_recursive_with_is_refused(
    monkeypatch: pytest.MonkeyPatch, pooler_url: URL, admin: sa.Engine, flavour: str, statement: str
) -> None:
    with app_behind_pooler(monkeypatch, pooler_url) as client, pytest.raises(ReadOnlyError):
        client.get(f"/{flavour}/read", params={"sql": statement})
    assert unchanged(admin)


# Writes the statement check would refuse, sent as if it did not exist: what the server does.
SERVER_REFUSES = [
    "DELETE FROM test_note",
    "UPDATE test_note SET text = 'changed'",
    "SELECT write_a_note()",
    "SELECT nextval('note_ids')",
    *HIDDEN_WRITES,
]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("endpoint", ["direct", "pooler"])
@pytest.mark.parametrize("statement", SERVER_REFUSES)
def test_the_server_refuses_a_write_the_statement_check_let_through(
    monkeypatch: pytest.MonkeyPatch,
    database_url: URL,
    pooler_url: URL,
    admin: sa.Engine,
    flavour: str,
    endpoint: str,
    statement: str,
) -> None:
    """The guard is the server's: with the check saying yes to everything, nothing is written."""
    for check in ("not_a_read_as_sent", "not_a_read"):  # however the check is named
        monkeypatch.setattr(readonly, check, lambda sql: None, raising=False)
    client = app_on(monkeypatch, database_url) if endpoint == "direct" else None
    client = client or app_behind_pooler(monkeypatch, pooler_url)
    with client, pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
        client.get(f"/{flavour}/read", params={"sql": statement})
    assert unchanged(admin)


# E'…' continued across '<newline>' stays in escape mode: \' is a quote inside the string, so
# the server reads "; <write> --" as SQL, which a standard-string reading takes for a literal.
E_STRING_CONTINUED = "SELECT E'a'\n'\\' ' ; {} --'"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_behind_the_pooler_an_escape_string_continuation_hides_no_write(
    monkeypatch: pytest.MonkeyPatch, pooler_url: URL, admin: sa.Engine, flavour: str
) -> None:
    statement = E_STRING_CONTINUED.format("DELETE FROM test_note")
    refused = pytest.raises(ReadOnlyError, match="more than one statement")
    with app_behind_pooler(monkeypatch, pooler_url) as client, refused:
        client.get(f"/{flavour}/read", params={"sql": statement})
    assert unchanged(admin)


def test_behind_the_pooler_a_read_cannot_set_the_next_clients_statement_timeout(
    monkeypatch: pytest.MonkeyPatch, pooler_url: URL, admin: sa.Engine
) -> None:
    """A SET outlives any transaction on a transaction-mode pooler's server connection."""
    statement = E_STRING_CONTINUED.format("SET statement_timeout = 50")
    with app_behind_pooler(monkeypatch, pooler_url) as client:
        with pytest.raises(ReadOnlyError, match="more than one statement"):
            client.get("/sync/read", params={"sql": statement})
        for _ in range(3):  # whichever server connection PgBouncer hands the write session
            assert client.get("/sync/write/timeout").json() != "50ms"


@pytest.mark.parametrize("endpoint", ["direct", "pooler"])
def test_a_value_bound_inside_a_string_literal_runs_no_statement(
    monkeypatch: pytest.MonkeyPatch,
    database_url: URL,
    pooler_url: URL,
    admin: sa.Engine,
    endpoint: str,
) -> None:
    """psycopg2 binds `q` into '%…%' as a quoted literal of its own: the SQL it sends is three
    statements. Checked as sent, it is refused; the template alone showed one string.
    psycopg 3 sends '%$1%' (a literal, which the check lets through) and `q` apart, which the
    server refuses: a parameter the statement does not use has no type."""
    url = pooler_url if endpoint == "pooler" else database_url
    client = app_on(monkeypatch, url, pooler="pgbouncer" if endpoint == "pooler" else "none")
    error: tuple[type[Exception], str] = (ReadOnlyError, "more than one statement")
    if run_driver() == "psycopg":
        error = (sa.exc.ProgrammingError, "data type of parameter")
    with client, pytest.raises(error[0], match=error[1]):
        client.get("/sync/read/like", params={"q": " ; DELETE FROM test_note; SELECT "})
    assert unchanged(admin)


def idle_in_transaction(admin: sa.Engine) -> int:
    with admin.connect() as connection:
        return int(
            connection.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%'"
                )
            )
            or 0
        )


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("endpoint", ["direct", "pooler"])
def test_a_read_session_streams_read_only(
    monkeypatch: pytest.MonkeyPatch,
    database_url: URL,
    pooler_url: URL,
    admin: sa.Engine,
    flavour: str,
    endpoint: str,
) -> None:
    """yield_per and AsyncSession.stream need a server-side cursor, so a transaction: a READ
    ONLY one, ended when the connection goes back to the pool, which is then autocommit again."""
    with admin.connect() as connection:
        connection.exec_driver_sql("INSERT INTO test_note (key, text) VALUES ('more', 'rows')")
    client = app_on(monkeypatch, database_url) if endpoint == "direct" else None
    with client or app_behind_pooler(monkeypatch, pooler_url) as client:
        assert client.get(f"/{flavour}/read/notes").json() == ["kept", "more"]
        sql = "SELECT key FROM test_note ORDER BY key"
        assert client.get(f"/{flavour}/read/stream", params={"sql": sql}).json() == [
            ["kept"],
            ["more"],
        ]
        # asyncpg's own error: SQLAlchemy does not wrap what a server-side cursor's fetch raises.
        with pytest.raises(Exception, match="cannot execute INSERT in a read-only transaction"):
            client.get(f"/{flavour}/read/stream", params={"sql": "SELECT write_a_note()"})
        # The same pooled connection, back in autocommit: a plain read after a stream.
        assert client.get(f"/{flavour}/read", params={"sql": "SELECT 1"}).json() == [["1"]]
        assert idle_in_transaction(admin) == 0
    with admin.connect() as connection:
        connection.exec_driver_sql("DELETE FROM test_note WHERE key = 'more'")
    assert unchanged(admin)


@pytest.mark.parametrize("endpoint", ["direct", "pooler"])
def test_a_read_with_percent_signs_runs_as_the_driver_sends_it(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, pooler_url: URL, endpoint: str
) -> None:
    """no_parameters: SQLAlchemy calls psycopg2's execute(statement) alone, which sends the
    text unformatted, and the check reads it so; bound, '%%' is a literal '%' in what is sent."""
    url = pooler_url if endpoint == "pooler" else database_url
    use_database(monkeypatch, url, pooler="pgbouncer" if endpoint == "pooler" else "none")
    engine = Container().read_engine()
    try:
        with engine.connect() as connection:
            alone = connection.execution_options(no_parameters=True)
            assert alone.exec_driver_sql("SELECT '100%'").scalar() == "100%"
            bound = connection.exec_driver_sql("SELECT '100%%', %(n)s", {"n": 1}).one()
            assert tuple(bound) == ("100%", 1)
    finally:
        engine.dispose()
