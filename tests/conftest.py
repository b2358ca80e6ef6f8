import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend import Container
from backend.db import deps
from backend.main import create_app
from backend.testing.databases import TestDatabase
from backend.testing.drivers import async_driver, run_driver, with_run_driver
from backend.testing.postgres import TestServer


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from config.yml's defaults, whatever the shell exported (libpq's PG*
    variables included: the layer reads them as libpq does)."""
    for name in list(os.environ):
        if name.startswith(("DATABASE_", "PG")) or name in ("BACKEND_CONFIG", "BACKEND_ENV_FILE"):
            monkeypatch.delenv(name)
    deps.forget_default_container()


# The suite runs on backend.testing's plugin, as a user's suite does (docs/testing.md); these
# names are the suite's own for its fixtures.


@pytest.fixture(scope="session")
def postgres(backend_server: TestServer) -> TestServer:
    """The run's server, its TLS front and its PgBouncer (backend_server)."""
    return backend_server


@pytest.fixture(scope="session")
def admin_engine(postgres: TestServer) -> Iterator[sa.Engine]:
    # Pre-ping: the fault suite restarts the server under this engine.
    engine = sa.create_engine(
        postgres.url("postgres"), isolation_level="AUTOCOMMIT", pool_pre_ping=True
    )
    yield engine
    engine.dispose()


@pytest.fixture
def role(admin_engine: sa.Engine) -> Iterator[tuple[str, str]]:
    """A login role of this test's own (roles are the cluster's, not the database's)."""
    name, password = f"role_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    with admin_engine.connect() as connection:
        connection.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
    yield name, password
    with admin_engine.connect() as connection:
        connection.execute(sa.text(f"DROP ROLE {name}"))


@pytest.fixture
def database_name(backend_transactional_db: TestDatabase) -> str:
    """A fresh database for this test, with the tests' tables: a clone of the plugin's
    template (database mode), dropped after the test."""
    return backend_transactional_db.name


@pytest.fixture
def database_url(postgres: TestServer, database_name: str) -> URL:
    """This test's database, as clients normally reach it (TLS, certificate verified)."""
    return postgres.url(database_name)


@pytest.fixture
def front_url(postgres: TestServer, database_name: str) -> URL:
    """This test's database through the TLS front (Neon's proxy stand-in)."""
    if postgres.front is None:
        pytest.skip("no TLS front with TEST_DATABASE_URL: the suite did not start the server")
    return postgres.url(database_name, "front")


@pytest.fixture
def pooler_url(postgres: TestServer, database_name: str) -> URL:
    """This test's database through PgBouncer in transaction mode (Neon's -pooler)."""
    if postgres.pooler is None:
        pytest.skip(
            "pgbouncer is not installed (apt-get install pgbouncer; .ci/run does): "
            "the pooler endpoint is not tested here"
        )
    return postgres.url(database_name, "pooler")


def serving(container: Container, module: ModuleType) -> FastAPI:
    """The app as create_app() makes it, plus a test module's own `router`, wired."""
    app = create_app(container)
    app.include_router(module.router)
    container.wire(modules=[module])
    return app


def use_database(monkeypatch: pytest.MonkeyPatch, url: URL, **settings: str) -> None:
    """Point DATABASE_URL (and any DATABASE_* given by its short name) at a database, on the
    run's drivers (BACKEND_TEST_DRIVER, backend/testing/drivers.py)."""
    url = with_run_driver(url)
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("DATABASE_ASYNC_DRIVER", async_driver())
    for name, value in settings.items():
        monkeypatch.setenv(f"DATABASE_{name.upper()}", value)


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch, database_url: URL) -> Container:
    use_database(monkeypatch, database_url, pool_size="20", max_overflow="10")
    return Container()


@pytest.fixture
def app(container: Container) -> FastAPI:
    return create_app(container)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (@pytest.mark.anyio) run on asyncio, the loop uvicorn and asyncpg use."""
    return "asyncio"


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Every behaviour runs through a sync route (threadpool) and an async one (event loop)."""
    return str(request.param)


# What runs psycopg 3 whatever the run's driver: these modules, and the parametrised cases
# named after it ([psycopg], [psycopg sync], …). In a run on psycopg2 (the default) they are
# left to the run on psycopg 3 (BACKEND_TEST_DRIVER=psycopg, CI's second pass): psycopg2-binary
# and psycopg-binary each bundle their own libpq and OpenSSL, psycopg2's documentation warns
# that another libssl in the process can crash it (psycopg/psycopg2#543), and a run here with
# both loaded once crashed in psycopg2.connect. So a psycopg2 run's process is a psycopg2
# app's: psycopg is never imported in it.
PSYCOPG_MODULES = [
    "unit/test_drivers.py",
    "unit/test_psycopg_sends.py",
    "integration/test_read_only_psycopg.py",
    "integration/test_driver_errors.py",
    "integration/test_closed_by_server.py",
    "integration/test_channel_binding.py",
]
collect_ignore = [] if run_driver() == "psycopg" else PSYCOPG_MODULES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if run_driver() == "psycopg":
        return
    elsewhere = pytest.mark.skip(reason="runs in the psycopg 3 pass (BACKEND_TEST_DRIVER=psycopg)")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "id", "")
        if any(
            part.startswith("psycopg") and not part.startswith("psycopg2")
            for part in params.replace(" ", "-").split("-")
        ):
            item.add_marker(elsewhere)
