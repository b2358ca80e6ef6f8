"""A request's sessions are closed whatever happens to the request at its end.

- A deadline over the app (`anyio.move_on_after` around it, as timeout middlewares put one)
  that expires while the request ends: the close still runs, for every session of the
  request, and the row lock its transaction held is gone at once.
- A task that kept the request's session and is still running a statement on it when the
  request ends: its connection is discarded, so the pool gets its slot back.
"""

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2 as httpx
import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter, FastAPI, HTTPException
from sqlalchemy.engine import URL
from starlette.types import ASGIApp, Receive, Scope, Send

from backend import (
    AsyncReadSessionDep,
    AsyncSessionDep,
    Container,
    ReadSessionDep,
    SessionDep,
)
from backend.testing.drivers import run_driver
from tests.conftest import serving, use_database

DEADLINE = 0.2
UPDATE = sa.text("UPDATE scope_counter SET value = value + 1 WHERE id = 1")
router = APIRouter()
tasks: list[asyncio.Task[Any]] = []


@router.post("/sync/update")
@inject
def update_then_conflict(session: SessionDep, read: ReadSessionDep) -> None:
    read.scalar(sa.text("SELECT 1"))
    session.connection().execute(UPDATE)
    time.sleep(DEADLINE * 1.5)  # the deadline passes while the route runs in its thread
    raise HTTPException(409, "changed my mind")


@router.post("/async/update")
@inject
async def update_then_conflict_async(session: AsyncSessionDep, read: AsyncReadSessionDep) -> None:
    await read.scalar(sa.text("SELECT 1"))
    await (await session.connection()).execute(UPDATE)
    await asyncio.sleep(DEADLINE * 1.5)  # cancelled by the deadline
    raise HTTPException(409, "changed my mind")


@router.get("/async/leave-running")
@inject
async def leave_a_statement_running(session: AsyncSessionDep) -> None:
    # Work that outlives its request, on the request's session: a statement still running
    # when the request ends.
    await session.scalar(sa.text("SELECT 1"))
    tasks.append(asyncio.create_task(session.scalar(sa.text("SELECT pg_sleep(1)"))))
    await asyncio.sleep(0.1)  # the statement is on the wire


@router.get("/async/pid")
@inject
async def pid(session: AsyncSessionDep) -> int:
    return int(await session.scalar(sa.text("SELECT pg_backend_pid()")) or 0)


class Deadline:
    """What a timeout middleware does: the app under an anyio deadline."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.move_on_after(DEADLINE):
            await self.app(scope, receive, send)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def checked_out(container: Container, flavour: str) -> list[int]:
    if flavour == "sync":
        engines = [container.engine(), container.read_engine()]
    else:
        engines = [container.async_engine().sync_engine, container.async_read_engine().sync_engine]
    return [engine.pool.checkedout() for engine in engines]  # type: ignore[attr-defined]


@pytest.fixture
def counter(database_url: URL) -> URL:
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE scope_counter (id int PRIMARY KEY, value int)"))
        connection.execute(sa.text("INSERT INTO scope_counter VALUES (1, 0)"))
    engine.dispose()
    return database_url


def another_writer_updates(url: URL) -> bool:
    """Whether another connection can update the row now (not locked by a leaked session)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("SET LOCAL lock_timeout = '500ms'"))
            connection.execute(UPDATE)
        return True
    except sa.exc.OperationalError as error:
        if "lock timeout" not in str(error):
            raise
        return False
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_a_deadline_as_the_request_ends_still_closes_every_session(
    monkeypatch: pytest.MonkeyPatch, counter: URL, flavour: str
) -> None:
    use_database(monkeypatch, counter, pool_size="2", max_overflow="0")
    container = Container()
    app = serving(container, sys.modules[__name__])
    app.add_middleware(Deadline)  # outermost: around the layer's own middleware
    async with running(app) as client:
        for _ in range(4):
            with contextlib.suppress(Exception):  # cut by the deadline: no response
                await client.post(f"/{flavour}/update")
            # No garbage collection: the sessions were closed, their connections returned
            # (the write one rolled back, its row lock gone) before the request ended.
            assert checked_out(container, flavour) == [0, 0]
            assert another_writer_updates(counter)


@pytest.mark.anyio
async def test_a_statement_still_running_at_the_end_of_its_request_gives_its_slot_back(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    use_database(monkeypatch, database_url, pool_size="1", max_overflow="0", pool_timeout="2")
    container = Container()
    app = serving(container, sys.modules[__name__])
    tasks.clear()
    async with running(app) as client:
        assert (await client.get("/async/leave-running")).status_code == 200
        # Its connection was discarded, not left checked out by the unfinished statement.
        assert container.async_engine().sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        answer = await client.get("/async/pid")
        assert answer.status_code == 200, answer.text
        outcome = (await asyncio.gather(tasks[0], return_exceptions=True))[0]
        if run_driver() == "psycopg2":
            # asyncpg: the statement that outlived its request failed with its connection.
            assert isinstance(outcome, Exception)
        # (psycopg 3 lets the statement finish on the connection it is closing.) Either way
        # that connection never went back to the pool.
        assert container.async_engine().sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
