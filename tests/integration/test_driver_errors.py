"""Real connect failures on each libpq driver (psycopg2; psycopg 3 sync and async): the same
verdict, the same retry decision and the same one-line report without the password.

psycopg 3 frames libpq's text again ("connection failed: …", and a block per attempt for a
host list): read naively, a wrong password would be an outage, and retried."""

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from backend.db.engines.connect_retry import retry_connects
from backend.db.engines.error_reports import describe
from backend.db.engines.errors import Verdict, classify, is_transient_connect_error

pytest.importorskip("psycopg")

# (path, driver): the sync engine's drivers, and psycopg 3's async engine.
DRIVERS = [("sync", "psycopg2"), ("sync", "psycopg"), ("async", "psycopg")]
RETRIES = 3


def _connect(url: URL, path: str, driver: str, attempts: list[object]) -> BaseException:
    """Connect once through an engine with the layer's retry; the error it raises. Every
    driver connect is counted in `attempts`."""
    url = url.set(drivername=f"postgresql+{driver}")
    connect_args: dict[str, Any] = {} if driver == "psycopg2" else {"prepare_threshold": None}
    if path == "sync":
        engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args=connect_args)
        _count(engine, attempts)
        retry_connects(engine, RETRIES, budget=5)
        with pytest.raises(sa.exc.DBAPIError) as raised:
            engine.connect()
        return raised.value
    async_engine = create_async_engine(url, poolclass=sa.NullPool, connect_args=connect_args)
    _count(async_engine.sync_engine, attempts)
    retry_connects(async_engine.sync_engine, RETRIES, budget=5)

    async def connect() -> None:
        async with async_engine.connect():
            pass

    with pytest.raises(sa.exc.DBAPIError) as raised:
        asyncio.run(connect())
    return raised.value


def _count(engine: sa.Engine, attempts: list[object]) -> None:
    connect = engine.dialect.connect

    def counted(*cargs: Any, **cparams: Any) -> Any:
        attempts.append(cparams.get("host"))
        return connect(*cargs, **cparams)

    engine.dialect.connect = counted  # type: ignore[method-assign]


Fails = Callable[[URL], tuple[BaseException, int]]


@pytest.fixture(params=DRIVERS, ids=["-".join(d) for d in DRIVERS])
def fails(request: pytest.FixtureRequest) -> Fails:
    path, driver = request.param

    def run(url: URL) -> tuple[BaseException, int]:
        attempts: list[object] = []
        error = _connect(url, path, driver, attempts)
        return error, len(attempts)

    return run


def _verdict(error: BaseException) -> Verdict:
    verdict = classify(error)
    assert verdict is not None, error
    return verdict


def test_a_wrong_password_is_a_misconfiguration_never_retried(
    database_url: URL, fails: Fails
) -> None:
    wrong = "Wr0ngPassw0rd-5ecret"
    error, attempts = fails(database_url.set(password=wrong))
    verdict = _verdict(error)
    assert (verdict.kind, verdict.sqlstate, verdict.retry_after) == (
        "misconfigured",
        "28P01",
        False,
    )
    assert verdict.fix is not None
    assert "password" in verdict.fix
    assert attempts == 1
    assert not is_transient_connect_error(error)
    line = describe(error)
    assert "password authentication failed" in line
    assert "\n" not in line
    assert line.startswith("OperationalError: connection to server at")  # psycopg's frame gone
    assert wrong not in line
    assert wrong not in str(error)
    assert wrong not in repr(error)


def test_an_unknown_database_is_a_misconfiguration_never_retried(
    database_url: URL, fails: Fails
) -> None:
    error, attempts = fails(database_url.set(database="no_such_database"))
    verdict = _verdict(error)
    assert (verdict.kind, verdict.sqlstate) == ("misconfigured", "3D000")
    assert attempts == 1
    assert 'database "no_such_database" does not exist' in describe(error)


def test_a_refused_port_is_an_outage_and_retried(database_url: URL, fails: Fails) -> None:
    with socket.socket() as held:  # bound, never listening: refused
        held.bind(("127.0.0.1", 0))
        url = database_url.set(host="127.0.0.1", port=held.getsockname()[1])
        error, attempts = fails(url)
    verdict = _verdict(error)
    assert (verdict.kind, verdict.retry_after) == ("unavailable", True)
    assert attempts == RETRIES + 1
    assert "Connection refused" in describe(error)


def test_too_many_connections_for_a_role_is_an_outage_not_retried(
    admin_engine: sa.Engine, database_url: URL, role: tuple[str, str], fails: Fails
) -> None:
    # 53300: connections free up, but another connect now only adds to the crowd.
    name, password = role
    with admin_engine.connect() as connection:
        connection.execute(sa.text(f"ALTER ROLE {name} CONNECTION LIMIT 0"))
    error, attempts = fails(database_url.set(username=name, password=password))
    verdict = _verdict(error)
    assert (verdict.kind, verdict.sqlstate, verdict.retry_after) == ("unavailable", "53300", True)
    assert attempts == 1


def test_a_host_list_reads_every_attempt(database_url: URL, fails: Fails) -> None:
    """A refused host, then the server with a wrong password: libpq (psycopg2) and psycopg 3
    (its own loop, one block per attempt) both say so; the password decides."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        hosts = f"{database_url.host},{database_url.host}"  # the name the certificate holds
        ports = f"{held.getsockname()[1]},{database_url.port}"
        url = database_url.set(host=None, port=None, password="wrong").update_query_dict(
            {"host": hosts, "port": ports}
        )
        error, attempts = fails(url)
    verdict = _verdict(error)
    assert (verdict.kind, verdict.sqlstate) == ("misconfigured", "28P01")
    assert attempts == 1
