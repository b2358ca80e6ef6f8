"""TLS as on Neon: really on through the app, and verified by the client.

What the client sees is checked everywhere; what the server sees (pg_stat_ssl) where PostgreSQL
itself speaks TLS, and not behind the suite's TLS front, which hands it plaintext.
"""

import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trustme
from dependency_injector.wiring import inject
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend import AsyncSessionDep, Container, SessionDep
from backend.main import create_app
from backend.testing.postgres import TestServer
from tests.conftest import serving, use_database


@pytest.fixture(autouse=True)
def tls_server(postgres: TestServer) -> None:
    if not postgres.tls:
        pytest.skip(
            "TEST_DATABASE_URL names a server without TLS (the suite's own server always has "
            "it, from OpenSSL or from its TLS front)"
        )


router = APIRouter()
SERVER_VIEW = sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


def client_sees_tls(driver_connection: Any) -> bool:
    """The client's own view, in each driver's words."""
    if hasattr(driver_connection, "pgconn"):  # psycopg 3, sync or async: libpq's
        return bool(driver_connection.pgconn.ssl_in_use)
    if hasattr(driver_connection, "info"):  # psycopg2: libpq's
        return bool(driver_connection.info.ssl_in_use)
    return driver_connection._transport.get_extra_info("sslcontext") is not None  # asyncpg


@router.get("/sync/tls")
@inject
def connection_tls(session: SessionDep) -> dict[str, object]:
    connection = session.connection()
    client = client_sees_tls(connection.connection.driver_connection)
    return {"client": client, "server": connection.scalar(SERVER_VIEW)}


@router.get("/async/tls")
@inject
async def connection_tls_async(session: AsyncSessionDep) -> dict[str, object]:
    connection = await session.connection()
    client = client_sees_tls((await connection.get_raw_connection()).driver_connection)
    return {"client": client, "server": await connection.scalar(SERVER_VIEW)}


@pytest.fixture
def app(container: Container) -> FastAPI:
    return serving(container, sys.modules[__name__])


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_requests_run_over_tls(client: TestClient, postgres: TestServer, flavour: str) -> None:
    # The suite's URLs ask for verify-full against the suite's CA: on the async path that is
    # an SSLContext built from sslmode and sslrootcert.
    body = client.get(f"/{flavour}/tls").json()
    assert body["client"] is True
    assert body["server"] is postgres.direct_tls
    assert client.get("/health/db").json()["ssl"] is True


def test_verify_full_refuses_a_server_it_cannot_verify(database_url: URL, tmp_path: Path) -> None:
    stranger = trustme.CA()
    ca_file = tmp_path / "other-ca.pem"
    stranger.cert_pem.write_to_path(str(ca_file))
    engine = sa.create_engine(database_url.update_query_dict({"sslrootcert": str(ca_file)}))
    with pytest.raises(sa.exc.OperationalError, match="certificate verify failed"):
        engine.connect()


def test_channel_binding_passes_through_to_libpq(
    monkeypatch: pytest.MonkeyPatch, postgres: TestServer, database_url: URL
) -> None:
    if not postgres.direct_tls:
        pytest.skip(
            "channel binding ties SCRAM to the server's own TLS channel, and the TLS front "
            "that serves this build without OpenSSL ends TLS before the server"
        )
    # SCRAM-SHA-256-PLUS binds the login to this TLS channel, as Neon's URLs ask since 2025.
    use_database(monkeypatch, database_url.update_query_dict({"channel_binding": "require"}))
    container = Container()
    assert container.engine().url.query["channel_binding"] == "require"
    with TestClient(create_app(container)) as client:
        assert client.get("/health/db").json()["ssl"] is True
