"""What an operator sees: honest error classes with one log line each, passwords hidden by
structure (never by searching their text), a startup line, and pool pressure."""

import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import URL

from backend import (
    AsyncReadSessionDep,
    AsyncSessionDep,
    Container,
    ReadSessionDep,
    SessionDep,
    use_database,
)
from backend.db.engines.error_reports import describe
from backend.testing.postgres import TestServer
from tests.conftest import serving

router = APIRouter()


@router.get("/sync/one")
@inject
def one(session: SessionDep) -> int:
    return int(session.scalar(sa.text("SELECT 1")) or 0)


@router.get("/async/one")
@inject
async def one_async(session: AsyncSessionDep) -> int:
    return int(await session.scalar(sa.text("SELECT 1")) or 0)


@router.get("/sync/slow")
@inject
def slow(session: SessionDep) -> None:
    session.execute(sa.text("SELECT pg_sleep(0.3)"))


@router.get("/sync/read-slow")
@inject
def read_slow(session: ReadSessionDep) -> None:
    session.scalar(sa.text("SELECT pg_sleep(0.5)"))


@router.get("/async/read-slow")
@inject
async def read_slow_async(session: AsyncReadSessionDep) -> None:
    await session.scalar(sa.text("SELECT pg_sleep(0.5)"))


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "backend" and r.levelno == level]


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The log lines of failed requests (not, say, a replica's warning at its first use)."""
    return [line for line in lines(caplog, logging.WARNING) if line.startswith("database ")]


AppOn = Callable[..., TestClient]


@pytest.fixture
def app_on(monkeypatch: pytest.MonkeyPatch) -> AppOn:
    """A client for this module's app on `url`, with DATABASE_* settings by short name."""

    def make(url: URL, **settings_: str) -> TestClient:
        for name, value in settings_.items():
            monkeypatch.setenv(f"DATABASE_{name.upper()}", value)
        container = Container()
        use_database(container, url)
        return TestClient(serving(container, sys.modules[__name__]), raise_server_exceptions=False)

    return make


def test_a_wrong_password_is_a_misconfiguration_logged_once(
    postgres: TestServer, database_name: str, app_on: AppOn, flavour: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    url = postgres.url(database_name).set(password="not-the-password")
    with caplog.at_level(logging.WARNING), app_on(url, connect_retries="0") as client:
        responses = [client.get(f"/{flavour}/one") for _ in range(3)]
    assert [r.status_code for r in responses] == [503] * 3
    assert all("retry-after" not in r.headers for r in responses)
    assert {r.json()["status"] for r in responses} == {"misconfigured"}
    (error,) = lines(caplog, logging.ERROR)  # once per cause, not once per request
    assert "password" in error
    assert "Fix: the user name or password in DATABASE_URL is wrong" in error
    assert "not-the-password" not in caplog.text


def test_an_outage_is_503_with_retry_after_and_one_warning_per_request(
    database_url: URL, app_on: AppOn, flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed = database_url.set(port=1)  # nothing listens there
    with caplog.at_level(logging.WARNING), app_on(closed, connect_retries="0") as client:
        responses = [client.get(f"/{flavour}/one") for _ in range(2)]
    assert [r.status_code for r in responses] == [503, 503]
    assert all(r.headers["retry-after"] == "1" for r in responses)
    assert {r.json()["status"] for r in responses} == {"unavailable"}
    warnings = lines(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert all("database unavailable" in w and "host 127.0.0.1" in w for w in warnings)


def test_a_statement_timeout_is_504_without_retry_after(
    database_url: URL, app_on: AppOn, caplog: pytest.LogCaptureFixture
) -> None:
    # The server's own statement_timeout (57014), as an operator sets it with ALTER ROLE.
    url = database_url.update_query_dict({"options": "-c statement_timeout=100"})
    with caplog.at_level(logging.WARNING), app_on(url) as client:
        response = client.get("/sync/slow")
    assert response.status_code == 504
    assert "retry-after" not in response.headers
    assert response.json()["status"] == "timeout"
    (warning,) = lines(caplog, logging.WARNING)
    assert "SQLSTATE 57014" in warning


def test_a_replica_failure_names_the_replica_not_the_primary(
    database_url: URL, app_on: AppOn, flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The replica: the same database under another name (the suite's certificate covers
    # localhost), with a statement timeout of its own that the read runs into.
    replica = database_url.set(host="localhost").update_query_dict(
        {"options": "-c statement_timeout=100"}
    )
    read_url = replica.render_as_string(hide_password=False)
    with caplog.at_level(logging.WARNING), app_on(database_url, read_url=read_url) as client:
        response = client.get(f"/{flavour}/read-slow")
    assert response.status_code == 504
    (warning,) = failures(caplog)
    assert warning.endswith("SQLSTATE 57014, host localhost")


def test_no_replica_to_read_from_names_the_replicas(
    database_url: URL, app_on: AppOn, flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    down = database_url.set(host="localhost", port=1).render_as_string(hide_password=False)
    settings_ = {"read_url": down, "read_fallback": "fail", "connect_retries": "0"}
    with caplog.at_level(logging.WARNING), app_on(database_url, **settings_) as client:
        response = client.get(f"/{flavour}/read-slow")
    assert response.status_code == 503
    assert "DATABASE_READ_FALLBACK=fail" in response.json()["error"]
    (warning,) = failures(caplog)
    assert warning.endswith("host localhost")


# Passwords that are common words and single letters: hiding them by searching their text
# would mangle messages ("O***erationalError") and give them away.
COMMON = ["p", "e", "postgres", "ssl", "error", "connection", "a", "failed", "1"]


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(password=st.sampled_from(COMMON) | st.text("abcdefgh", min_size=12, max_size=16))
def test_messages_do_not_depend_on_the_password_and_never_show_it(
    postgres: TestServer, database_name: str, password: str
) -> None:
    """The same failure gives the same message whatever the password: it is not in there."""

    def message(secret: str, **parts: Any) -> str:
        engine = sa.create_engine(postgres.url(database_name).set(password=secret, **parts))
        try:
            with engine.connect():
                return "connected"
        except sa.exc.DBAPIError as exc:
            return describe(exc)
        finally:
            engine.dispose()

    failures: list[dict[str, Any]] = [{}, {"port": 1}, {"database": "no_such_database"}]
    for parts in failures:
        said = message(password, **parts)
        assert said == message("Zq9-unlikely-Xw2", **parts)
        assert "OperationalError" in said
        if len(password) >= 12:
            assert password not in said


def test_the_startup_line_says_which_database(
    database_url: URL, app_on: AppOn, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), app_on(database_url, pool_size="3"):
        pass
    (line,) = [m for m in lines(caplog, logging.INFO) if m.startswith("database ")]
    assert f"postgres:***@127.0.0.1:{database_url.port}/{database_url.database}" in line
    assert "direct" in line
    assert "sslmode=verify-full" in line
    assert "pool 3 + 5" in line
    assert str(database_url.password) not in line


def test_waiting_for_a_pooled_connection_shows_in_health_and_the_log(
    database_url: URL, app_on: AppOn, caplog: pytest.LogCaptureFixture
) -> None:
    settings_ = {"pool_size": "1", "max_overflow": "0", "pool_wait_warning": "0.2"}
    with caplog.at_level(logging.WARNING), app_on(database_url, **settings_) as client:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: client.get("/sync/slow").status_code, range(8)))
        pool_figures = client.get("/health/db").json()["pool"]
    assert statuses == [200] * 8
    assert pool_figures["waits"] >= 7
    assert pool_figures["slowest_wait_ms"] > 200
    (warning,) = [w for w in lines(caplog, logging.WARNING) if "waited" in w]
    assert "for a pooled connection" in warning
    assert "DATABASE_POOL_SIZE" in warning


@pytest.mark.parametrize("refusal", ["plaintext", "startup parameter on a pooler"])
def test_a_refused_setting_is_a_misconfiguration_not_an_outage(
    postgres: TestServer, database_name: str, app_on: AppOn, flavour: str, refusal: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    if refusal == "plaintext":  # the TLS-only server: "pg_hba.conf rejects …, no encryption"
        url, fix = (
            postgres.url(database_name).update_query_dict({"sslmode": "disable"}),
            ("set DATABASE_SSLMODE=require"),
        )
    else:  # PgBouncer, not named a pooler: "unsupported startup parameter: options"
        if postgres.pooler is None:
            pytest.skip("pgbouncer is not installed")
        url = postgres.url(database_name, "pooler").update_query_dict(
            {"options": "-c statement_timeout=5000"}
        )
        fix = "refuses startup parameters: remove options from DATABASE_URL"
    with caplog.at_level(logging.WARNING), app_on(url, connect_retries="0") as client:
        responses = [client.get(f"/{flavour}/one") for _ in range(2)]
    assert [r.status_code for r in responses] == [503, 503]
    assert all("retry-after" not in r.headers for r in responses)
    assert {r.json()["status"] for r in responses} == {"misconfigured"}
    (error,) = lines(caplog, logging.ERROR)
    assert fix in error
