import os
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlmodel import SQLModel

from backend.container import Container
from backend.db import session as session_module
from backend.main import create_app
from tests.postgres import SuiteDatabase, session_database


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from config.yml's defaults, whatever the shell exported."""
    for name in list(os.environ):
        if name.startswith("DATABASE_"):
            monkeypatch.delenv(name)
    session_module.default_container.cache_clear()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteDatabase]:
    with session_database(tmp_path_factory.mktemp("certificates")) as database:
        yield database


@pytest.fixture(scope="session")
def admin_engine(postgres: SuiteDatabase) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def database_url(postgres: SuiteDatabase, admin_engine: sa.Engine) -> Iterator[URL]:
    """A fresh database for this test (a clone of template1, ~20 ms), with the tests' tables."""
    name = f"test_{uuid4().hex[:12]}"
    with admin_engine.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = postgres.url(name)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    yield url
    with admin_engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')


def use_database(monkeypatch: pytest.MonkeyPatch, url: URL, **settings: str) -> None:
    """Point DATABASE_URL (and any DATABASE_* given by its short name) at a database."""
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
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
