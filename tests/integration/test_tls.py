"""TLS as on Neon: really on through the app, required by the server, verified by the client."""

import psycopg2
import pytest
import sqlalchemy as sa
import trustme
from dependency_injector.wiring import inject
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend.container import AsyncSessionDep, Container, SessionDep
from backend.main import create_app
from tests.conftest import use_database
from tests.standin.postgres import SuiteDatabase


@pytest.fixture(autouse=True)
def tls_server(postgres: SuiteDatabase) -> None:
    if not postgres.tls:
        pytest.skip(
            "the test PostgreSQL has no TLS: no OpenSSL build found (set BACKEND_PG_BINDIR "
            "to one, or TEST_DATABASE_URL to a TLS server)"
        )


router = APIRouter()
TLS_OF_THIS_CONNECTION = sa.text(
    "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
)


@router.get("/sync/tls")
@inject
def connection_tls(session: SessionDep) -> dict[str, object]:
    ssl, version = session.connection().execute(TLS_OF_THIS_CONNECTION).one()
    return {"ssl": ssl, "version": version}


@router.get("/async/tls")
@inject
async def connection_tls_async(session: AsyncSessionDep) -> dict[str, object]:
    ssl, version = (await (await session.connection()).execute(TLS_OF_THIS_CONNECTION)).one()
    return {"ssl": ssl, "version": version}


@pytest.fixture
def app(container: Container) -> FastAPI:
    app = create_app(container)
    app.include_router(router)
    container.wire(modules=[__name__])
    return app


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_requests_run_over_tls(client: TestClient, flavour: str) -> None:
    # The suite's URLs ask for verify-full against the suite's CA: on the async path that is
    # an SSLContext built from sslmode and sslrootcert.
    body = client.get(f"/{flavour}/tls").json()
    assert body["ssl"] is True
    assert body["version"].startswith("TLSv1.")
    assert client.get("/health/db").json()["ssl"] is True


def test_the_server_refuses_plaintext(database_url: URL) -> None:
    plaintext = database_url.difference_update_query(["sslrootcert"]).update_query_dict(
        {"sslmode": "disable"}
    )
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(plaintext.render_as_string(hide_password=False).replace("+psycopg2", ""))


def test_verify_full_refuses_a_server_it_cannot_verify(database_url: URL, tmp_path: object) -> None:
    stranger = trustme.CA()
    ca_file = f"{tmp_path}/other-ca.pem"
    stranger.cert_pem.write_to_path(ca_file)
    engine = sa.create_engine(database_url.update_query_dict({"sslrootcert": ca_file}))
    with pytest.raises(sa.exc.OperationalError, match="certificate verify failed"):
        engine.connect()


def test_channel_binding_passes_through_to_libpq(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    # SCRAM-SHA-256-PLUS binds the login to this TLS channel, as Neon's URLs ask since 2025.
    use_database(monkeypatch, database_url.update_query_dict({"channel_binding": "require"}))
    container = Container()
    assert container.engine().url.query["channel_binding"] == "require"
    with TestClient(create_app(container)) as client:
        assert client.get("/health/db").json()["ssl"] is True
