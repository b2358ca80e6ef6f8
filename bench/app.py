"""The app under benchmark: every route runs one SELECT 1 through its way of getting a session.

`/baseline` is the FastAPI/SQLModel tutorial pattern on an engine with the same URL and pool
settings and SQLAlchemy's pool_pre_ping=True, as Neon's guide recommends. `/bare-sync` and
`/bare-async` are the floors: a bare connection of the same engine, so of the same driver, which
the layer picks from the server's environment (`/driver` says which it picked).
"""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, FastAPI, Request
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

from backend import (
    AsyncReadSessionDep,
    AsyncSessionDep,
    Container,
    ReadSessionDep,
    SessionDep,
)
from backend.main import create_app

ONE = sa.text("SELECT 1")
LARGE_POOL = 64  # connections for /baseline-large: as many as the largest load it meets
router = APIRouter()


def get_db(request: Request) -> Iterator[Session]:
    with Session(request.app.state.baseline_engine) as session:
        yield session


def get_large_db(request: Request) -> Iterator[Session]:
    with Session(request.app.state.large_engine) as session:
        yield session


@router.get("/baseline")
def baseline(session: Session = Depends(get_db)) -> int:
    return int(session.scalar(ONE) or 0)


@router.get("/baseline-large")
def baseline_large_pool(session: Session = Depends(get_large_db)) -> int:
    # The same, on a pool as large as the load (64): it cannot run out of connections.
    return int(session.scalar(ONE) or 0)


@router.get("/baseline-untyped", response_model=None)
def baseline_untyped(session: Session = Depends(get_db)):  # type: ignore[no-untyped-def]
    # No return annotation, no response model: FastAPI has nothing to validate in its
    # threadpool after the route, so nothing that holds a connection needs a worker.
    return int(session.scalar(ONE) or 0)


@router.get("/sync")
@inject
def ours_sync(session: SessionDep) -> int:
    return int(session.scalar(ONE) or 0)


@router.get("/async")
@inject
async def ours_async(session: AsyncSessionDep) -> int:
    return int(await session.scalar(ONE) or 0)


@router.get("/sync-commit")
@inject
def ours_sync_commit(session: SessionDep) -> int:
    # Committed: psycopg 3 keeps its statement counts (and prepared statements) past a COMMIT,
    # and clears them at every ROLLBACK, which ends /sync's transaction.
    one = int(session.scalar(ONE) or 0)
    session.commit()
    return one


@router.get("/async-commit")
@inject
async def ours_async_commit(session: AsyncSessionDep) -> int:
    one = int(await session.scalar(ONE) or 0)
    await session.commit()
    return one


@router.get("/read")
@inject
def ours_read(session: ReadSessionDep) -> int:
    return int(session.scalar(ONE) or 0)


@router.get("/async-read")
@inject
async def ours_async_read(session: AsyncReadSessionDep) -> int:
    return int(await session.scalar(ONE) or 0)


@router.get("/bare-async")
async def bare_async_connection(request: Request) -> int:
    # The floor for the async route: no ORM session, no injection.
    async with request.app.state.container.async_engine().connect() as connection:
        return int(await connection.scalar(ONE) or 0)


@router.get("/bare-sync")
def bare_sync_connection(request: Request) -> int:
    # The floor for the sync route, on its driver: no ORM session, no injection.
    with request.app.state.container.engine().connect() as connection:
        return int(connection.scalar(ONE) or 0)


@router.get("/driver")
def driver(request: Request) -> dict[str, str]:
    """The driver of each engine the layer built from this server's environment."""
    container = request.app.state.container
    return {
        "sync": container.engine().dialect.driver,
        "async": container.async_engine().dialect.driver,
        "prepare_threshold": os.environ.get("BENCH_PREPARE_THRESHOLD", "the layer's"),
    }


def prepare_after(engine: sa.Engine, threshold: int) -> None:
    """psycopg 3 prepares a statement at its `threshold`-th run on a connection. Behind a pooler
    the layer turns that off (prepare_threshold=None); this turns it on again, to measure what
    it saves through a PgBouncer that keeps prepared statements (>= 1.21). At checkout, so that
    a connection opened before this was called is covered too."""

    @sa.event.listens_for(engine, "checkout")
    def prepare(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        connection = record.driver_connection  # psycopg's, under the async adapter too
        if connection is not None and connection.prepare_threshold != threshold:
            connection.prepare_threshold = threshold


def build() -> FastAPI:
    container = Container()
    app = create_app(container)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app):
            settings = container.settings()
            app.state.baseline_engine = sa.create_engine(
                container.engine().url,
                pool_size=settings.pool_size,
                max_overflow=settings.max_overflow,
                pool_timeout=settings.pool_timeout,
                pool_recycle=settings.pool_recycle,
                pool_pre_ping=True,
            )
            app.state.large_engine = sa.create_engine(
                container.engine().url,
                pool_size=settings.pool_size,
                max_overflow=max(LARGE_POOL - settings.pool_size, 0),
                pool_timeout=settings.pool_timeout,
                pool_recycle=settings.pool_recycle,
                pool_pre_ping=True,
            )
            if (threshold := os.environ.get("BENCH_PREPARE_THRESHOLD")) is not None:
                prepare_after(container.engine(), int(threshold))
                prepare_after(container.async_engine().sync_engine, int(threshold))
            yield
            app.state.baseline_engine.dispose()
            app.state.large_engine.dispose()

    app.router.lifespan_context = lifespan
    app.include_router(router)
    container.wire(modules=[__name__])
    return app


app = build()
