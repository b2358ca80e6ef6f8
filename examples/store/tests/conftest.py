"""The sample suite runs as a user's would, on backend's plugin. For the figures
(`python -m bench.isolation`), STORE_ISOLATION picks how each test is isolated:
"transaction" (the plugin's default), "database" (a clone per test), or "naive" — what users
write by hand: one database, `drop_all()` and `create_all()` around every test."""

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from backend.testing.databases import TestDatabase

MODE = os.environ.get("STORE_ISOLATION", "transaction")


@pytest.fixture(scope="session")
def naive_database(backend_server, backend_databases, backend_schema) -> TestDatabase:
    name = backend_databases.clone(backend_schema)
    return TestDatabase(name, backend_server.url(name), "database")


@pytest.fixture(scope="session")
def naive_engine(naive_database: TestDatabase) -> Iterator[sa.Engine]:
    engine = sa.create_engine(naive_database.url)
    yield engine
    engine.dispose()


@pytest.fixture
def naive(naive_database: TestDatabase, naive_engine: sa.Engine) -> Iterator[TestDatabase]:
    SQLModel.metadata.create_all(naive_engine)
    yield naive_database
    naive_database.close()  # lets the app's container go
    SQLModel.metadata.drop_all(naive_engine)


@pytest.fixture
def backend_database(request: pytest.FixtureRequest) -> TestDatabase:
    fixture = {"transaction": "backend_db", "database": "backend_transactional_db"}
    return request.getfixturevalue(fixture.get(MODE, "naive"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
