"""GET /health/db, and the app's life with a database that comes and goes."""

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from backend import Container
from backend.db.engines.health import DatabaseHealth, probe, probe_async
from backend.embedded import PostgresServer, has_tls
from backend.main import create_app
from backend.testing.postgres import Certificates, TestServer, choose_bindir, new_server
from tests.conftest import use_database


def test_health_reports_the_database(client: TestClient, postgres: TestServer) -> None:
    response = client.get("/health/db")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["latency_ms"] > 0
    assert body["ssl"] is postgres.tls
    assert body["server_version"][:2].isdigit()
    assert body["pool"] == {
        "size": 20,
        "checked_out": 0,
        "overflow": 0,
        "waits": 0,
        "slowest_wait_ms": 0.0,
    }


@pytest.fixture
def private_server() -> Iterator[tuple[PostgresServer, Path | None]]:
    """A server of this test's own, to stop and start under a running app."""
    bindir = choose_bindir()
    with tempfile.TemporaryDirectory() as folder:
        certificates = Certificates(Path(folder)) if has_tls(bindir) else None
        server = new_server(bindir, certificates)
        try:
            server.start()
            server.stop()  # made, and down: the app starts without it
            yield server, certificates.ca_file if certificates else None
        finally:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)  # a temporary server's folder


def test_the_app_starts_without_its_database_and_recovers_by_itself(
    monkeypatch: pytest.MonkeyPatch,
    private_server: tuple[PostgresServer, Path | None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, ca_file = private_server
    url = server.url()
    if ca_file:
        url = url.update_query_dict({"sslmode": "verify-full", "sslrootcert": str(ca_file)})
    use_database(monkeypatch, url)
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(Container())) as client:
        down = client.get("/health/db")
        assert down.status_code == 503
        assert down.json()["status"] == "unavailable"
        assert "Connection refused" in down.json()["error"]

        server.start()
        assert client.get("/health/db").status_code == 200

        server.stop()  # the pooled connection dies with it; pre-ping notices
        assert client.get("/health/db").status_code == 503

        server.start()
        assert client.get("/health/db").status_code == 200
    assert server.password not in caplog.text
    assert server.password not in down.text


def test_a_wrong_password_is_reported_without_it(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ngPassw0rd-5ecret"
    use_database(monkeypatch, database_url.set(password=wrong))
    caplog.set_level(logging.DEBUG)
    container = Container()
    with TestClient(create_app(container)) as client:
        response = client.get("/health/db")
    assert response.status_code == 503
    assert "password authentication failed" in response.json()["error"]
    assert wrong not in response.text
    assert wrong not in caplog.text
    with pytest.raises(sa.exc.OperationalError) as error:  # what a route would raise
        container.engine().connect()
    assert wrong not in str(error.value)
    assert wrong not in repr(error.value)


@pytest.mark.anyio
async def test_a_wrong_password_on_the_async_path_is_reported_without_it(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ngPassw0rd-5ecret"
    use_database(monkeypatch, database_url.set(password=wrong))
    caplog.set_level(logging.DEBUG)
    async_engine = Container().async_engine()
    with pytest.raises(sa.exc.DBAPIError, match="password authentication failed") as error:
        async with async_engine.connect():
            pass
    await async_engine.dispose()
    assert wrong not in str(error.value)
    assert wrong not in repr(error.value)
    assert wrong not in caplog.text


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "psycopg-async", "asyncpg-async"])
def test_the_probe_says_tls_as_the_client_sees_it_on_each_driver(
    postgres: TestServer, database_name: str, driver: str
) -> None:
    name, _, path = driver.partition("-")
    pytest.importorskip(name)
    url = postgres.url(database_name).set(drivername=f"postgresql+{name}")
    if name == "asyncpg":  # it takes no libpq words; `ssl` as the server's TLS allows
        url = url.difference_update_query(["sslmode", "sslrootcert"])
        url = url.update_query_dict({"ssl": "require"} if postgres.tls else {})
    if path == "async":
        async_engine = create_async_engine(url, poolclass=sa.NullPool)

        async def probed() -> DatabaseHealth:
            try:
                return await probe_async(async_engine)
            finally:
                await async_engine.dispose()

        health = asyncio.run(probed())
    else:
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        health = probe(engine)
        engine.dispose()
    # libpq says what the client sees; asyncpg says nothing public of its TLS, so the probe asks
    # the server, which behind the suite's TLS front (a build without OpenSSL) sees plaintext.
    assert health["ssl"] is (postgres.direct_tls if name == "asyncpg" else postgres.tls)
    assert health["server_version"][:2].isdigit()
