"""Error classes come from the server's SQLSTATE (or, for psycopg2's failed connect, libpq's
primary message line), the same on both paths; never from text a client sent."""

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
import trustme
from dependency_injector.wiring import inject
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend import AsyncSessionDep, Container, SessionDep, use_database
from backend.api.errors import answer
from backend.db.engines.error_reports import describe, label
from backend.db.engines.errors import Verdict, classify, is_transient_connect_error
from backend.testing.postgres import TestServer
from tests.conftest import serving

router = APIRouter()

UNIQUE = "CREATE TEMP TABLE IF NOT EXISTS names (name text UNIQUE)"
INSERT = "INSERT INTO names VALUES (:name)"


@router.get("/sync/one")
@inject
def one(session: SessionDep) -> int:
    return int(session.scalar(sa.text("SELECT 1")) or 0)


@router.get("/async/one")
@inject
async def one_async(session: AsyncSessionDep) -> int:
    return int(await session.scalar(sa.text("SELECT 1")) or 0)


@router.post("/sync/twice/{name}")
@inject
def insert_twice(name: str, session: SessionDep) -> None:
    connection = session.connection()
    connection.execute(sa.text(UNIQUE))
    for _ in range(2):
        connection.execute(sa.text(INSERT), {"name": name})


@router.post("/async/twice/{name}")
@inject
async def insert_twice_async(name: str, session: AsyncSessionDep) -> None:
    connection = await session.connection()
    await connection.execute(sa.text(UNIQUE))
    for _ in range(2):
        await connection.execute(sa.text(INSERT), {"name": name})


AppOn = Callable[[URL], TestClient]


@pytest.fixture
def app_on(monkeypatch: pytest.MonkeyPatch) -> AppOn:
    def make(url: URL) -> TestClient:
        monkeypatch.setenv("DATABASE_CONNECT_RETRIES", "0")
        container = Container()
        use_database(container, url)
        return TestClient(serving(container, sys.modules[__name__]), raise_server_exceptions=False)

    return make


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The layer's error lines (not another library's, such as asyncio's)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("backend")
    ]


def test_too_many_connections_for_a_role_is_an_outage_on_both_paths(
    admin_engine: sa.Engine, database_url: URL, role: tuple[str, str], app_on: AppOn,
    flavour: str, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # 53300: connections free up; it is no wrong password.
    name, password = role
    with admin_engine.connect() as connection:
        connection.execute(sa.text(f"ALTER ROLE {name} CONNECTION LIMIT 0"))
    url = database_url.set(username=name, password=password)
    with caplog.at_level(logging.WARNING), app_on(url) as client:
        response = client.get(f"/{flavour}/one")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.headers["retry-after"] == "1"
    assert "fix" not in response.json()
    assert "too many connections for role" in response.json()["error"]
    assert any("SQLSTATE 53300" in r.getMessage() for r in caplog.records)


def test_a_revoked_connect_privilege_is_a_misconfiguration_on_both_paths(
    admin_engine: sa.Engine, database_url: URL, database_name: str, role: tuple[str, str],
    app_on: AppOn, flavour: str, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    name, password = role
    with admin_engine.connect() as connection:
        connection.execute(sa.text(f'REVOKE CONNECT ON DATABASE "{database_name}" FROM PUBLIC'))
    url = database_url.set(username=name, password=password)
    with caplog.at_level(logging.WARNING), app_on(url) as client:
        responses = [client.get(f"/{flavour}/one") for _ in range(2)]
    assert [r.status_code for r in responses] == [503, 503]
    assert all("retry-after" not in r.headers for r in responses)
    assert {r.json()["status"] for r in responses} == {"misconfigured"}
    assert "GRANT CONNECT" in responses[0].json()["fix"]
    (error,) = errors(caplog)
    assert "SQLSTATE 42501" in error


def test_a_certificate_that_does_not_verify_is_a_misconfiguration_on_both_paths(
    postgres: TestServer, database_url: URL, app_on: AppOn, flavour: str, tmp_path: Path
) -> None:
    if postgres.ca_file is None:
        pytest.skip("no TLS here: TEST_DATABASE_URL names a server without the suite's CA")
    stranger = tmp_path / "stranger-ca.pem"  # a CA that did not sign the server's certificate
    trustme.CA().cert_pem.write_to_path(str(stranger))
    url = database_url.update_query_dict({"sslmode": "verify-full", "sslrootcert": str(stranger)})
    with app_on(url) as client:
        response = client.get(f"/{flavour}/one")
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    assert response.json()["status"] == "misconfigured"
    assert "certificate" in response.json()["fix"]


@pytest.mark.parametrize("name", ["alice", "bob ssl required", "no encryption 28P01"])
def test_a_clients_own_text_does_not_decide_the_error_class(
    database_url: URL, app_on: AppOn, flavour: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A duplicate key is the route's own error (FastAPI's 500), whatever value it was on."""
    with caplog.at_level(logging.WARNING), app_on(database_url) as client:
        response = client.post(f"/{flavour}/twice/{name}")
        app = client.app
    assert response.status_code == 500
    assert "names_name_key" not in response.text  # no constraint named to the client
    assert not [r for r in caplog.records if r.name == "backend"]
    assert isinstance(app, FastAPI)
    assert not app.state.__dict__.get("backend_misconfigurations")


def test_many_distinct_values_leave_no_log_lines_and_no_state(
    database_url: URL, app_on: AppOn, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), app_on(database_url) as client:
        statuses = {client.post(f"/sync/twice/v{i} ssl required").status_code for i in range(300)}
        app = client.app
    assert statuses == {500}
    assert not errors(caplog)
    assert isinstance(app, FastAPI)
    assert not app.state.__dict__.get("backend_misconfigurations")


def test_the_misconfigurations_remembered_as_logged_are_bounded() -> None:
    app = FastAPI()
    for i in range(400):
        error = sa.exc.OperationalError("SELECT 1", {}, Exception("x"))
        label(error, f"host-{i}")
        answer(app, error, Verdict("misconfigured", 503, False, "28P01", "fix it"))
    assert len(app.state.backend_misconfigurations) <= 256


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        # libpq's text for a failed connect, which psycopg2 gives without a SQLSTATE: the
        # primary line decides, never a DETAIL line.
        ('connection to server at "h" (10.0.0.1), port 5432 failed: FATAL:  too many '
         'connections for role "bob"', "unavailable"),
        ('connection to server at "h" (10.0.0.1), port 5432 failed: FATAL:  permission denied '
         'for database "app"\nDETAIL:  User does not have CONNECT privilege.', "misconfigured"),
        ('connection to server at "h" (10.0.0.1), port 5432 failed: FATAL:  the database '
         "system is starting up\nDETAIL:  password authentication failed", "unavailable"),
        ('connection to server at "h" (10.0.0.1), port 5432 failed: FATAL:  role "ssl '
         'required" does not exist', "misconfigured"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "psycopg-host-list"])
def test_a_failed_connect_without_a_sqlstate_is_read_from_its_primary_line(
    text: str, kind: str, driver: str
) -> None:
    error = sa.exc.OperationalError(None, None, driver_error(driver, text))
    verdict = classify(error)
    assert verdict is not None
    assert verdict.kind == kind
    # A server starting up is worth another connect; a refusal, or a connection limit, is not.
    assert is_transient_connect_error(error) is ("starting up" in text)


def driver_error(driver: str, libpq_text: str) -> Exception:
    """The driver's error for a connect libpq failed with `libpq_text`: psycopg2 gives it as it
    is; psycopg 3 frames it ("connection failed: "), and after a host list's failed attempts
    adds one block per attempt (psycopg/connection.py, Connection.connect)."""
    if driver == "psycopg2":
        return psycopg2.OperationalError(libpq_text)
    pytest.importorskip("psycopg")
    import psycopg

    framed = f"connection failed: {libpq_text}"
    if driver == "psycopg-host-list":
        refused = (
            'connection failed: connection to server at "10.0.0.2", port 5432 failed: '
            "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
            "connections?"
        )
        framed = "\n".join(
            [
                framed,
                "Multiple connection attempts failed. All failures were:",
                f"- host: 'h2', port: '5432', hostaddr: '10.0.0.2': {refused}",
                f"- host: 'h', port: '5432', hostaddr: '10.0.0.1': {framed}",
            ]
        )
    return psycopg.OperationalError(framed)


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "psycopg-host-list"])
def test_a_refused_connect_is_an_outage_worth_a_retry_on_every_libpq_driver(driver: str) -> None:
    text = (
        'connection to server at "h" (10.0.0.1), port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    error = sa.exc.OperationalError(None, None, driver_error(driver, text))
    verdict = classify(error)
    assert verdict is not None
    assert verdict.kind == "unavailable"
    assert is_transient_connect_error(error)
    assert describe(error) == (
        'OperationalError: connection to server at "h" (10.0.0.1), port 5432 failed: '
        "Connection refused"
    )
