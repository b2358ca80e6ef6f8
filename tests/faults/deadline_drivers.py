"""The fault service on either driver pair: psycopg2 + asyncpg (the container's own engines),
or psycopg 3 sync + async, built from the same connection plan with the same options."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from dependency_injector import providers
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend import Container
from backend.db.connection.plan import ConnectionPlan
from backend.db.engines.build import create_sync_engine
from backend.db.engines.connect_retry import retry_connects
from backend.db.engines.tcp_timeouts import bound_waits, libpq_tcp_parameters
from tests.conftest import serving, use_database
from tests.faults import service

DRIVERS = ["psycopg2+asyncpg", "psycopg"]


def psycopg_plan(plan: ConnectionPlan) -> ConnectionPlan:
    """The plan with psycopg 3 for the sync engine: the same libpq URL and arguments, and no
    prepared statements (PgBouncer in transaction mode)."""
    args = plan.psycopg2
    return replace(
        plan,
        psycopg2=replace(
            args,
            url=args.url.set(drivername="postgresql+psycopg"),
            connect_args={**args.connect_args, "prepare_threshold": None},
        ),
    )


def psycopg_engines(container: Container) -> tuple[Engine, AsyncEngine]:
    plan = psycopg_plan(container.connection_plan())
    settings = plan.settings
    engine = create_sync_engine(plan)
    url = libpq_tcp_parameters(plan.psycopg2.url, settings.tcp_user_timeout)
    async_engine = create_async_engine(url, connect_args=dict(plan.psycopg2.connect_args))
    retry_connects(async_engine.sync_engine, settings.connect_retries, settings.connect_timeout)
    bound_waits(
        async_engine.sync_engine,
        statement_timeout=settings.statement_timeout,
        tcp_user_timeout=settings.tcp_user_timeout,
        command_timeout=0,
    )
    return engine, async_engine


@contextmanager
def running_service(
    monkeypatch: pytest.MonkeyPatch, url: URL, drivers: str, **settings: str
) -> Iterator[TestClient]:
    """tests.faults.service.running_service, on `drivers`."""
    use_database(monkeypatch, url, **settings)
    container = Container()
    own: tuple[Engine, AsyncEngine] | None = None
    if drivers == "psycopg":
        pytest.importorskip("psycopg")
        own = engine, async_engine = psycopg_engines(container)
        container.engine.override(providers.Object(engine))
        container.async_engine.override(providers.Object(async_engine))
    app = serving(container, sys.modules[service.__name__])
    with TestClient(app, raise_server_exceptions=False) as client:
        try:
            yield client
        finally:
            if own is not None:  # the container disposes only the engines it built
                own[0].dispose()
                assert client.portal is not None  # the app's loop, the async pool's
                client.portal.call(own[1].dispose)
