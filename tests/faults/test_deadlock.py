"""256 concurrent requests on Neon's recommended pool (5 + 5) and FastAPI's 40 threadpool workers.

A sync session lives until the response is sent, and after a sync route FastAPI validates the
response model in its threadpool: a request that holds a connection needs a worker while the
workers may all be routes waiting for a connection. The control is the tutorial pattern
(`def get_db(): with Session(engine) as s: yield s`) on an engine of the same size: the same
load there ends in pool timeouts.
"""

import asyncio
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Annotated

import anyio.to_thread
import httpx2 as httpx
import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy.engine import URL
from sqlmodel import Session

from backend import Container, SessionDep
from tests.conftest import serving, use_database

CONCURRENT = 256
POOL = {"pool_size": "5", "max_overflow": "5", "pool_timeout": "5"}


class Slept(BaseModel):  # a response model: FastAPI validates it in the threadpool
    pid: int


@inject
def get_current_user(session: SessionDep) -> int:
    return int(session.scalar(sa.text("SELECT pg_backend_pid()")) or 0)


router = APIRouter()


@router.get("/sleep")
@inject
def sleep(session: SessionDep, pid: Annotated[int, Depends(get_current_user)]) -> Slept:
    session.scalar(sa.text("SELECT pg_sleep(0.01)"))  # no commit: the close rolls back
    return Slept(pid=pid)


async def burst(app: FastAPI) -> Counter[int]:
    async with app.router.lifespan_context(app):
        # A pool timeout that escapes an app without our handler is a 500, not an exception.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.gather(*(client.get("/sleep") for _ in range(CONCURRENT)))
    return Counter(response.status_code for response in responses)


@pytest.mark.anyio
async def test_256_concurrent_sync_requests_on_a_pool_of_10_all_succeed(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    assert anyio.to_thread.current_default_thread_limiter().total_tokens == 40
    use_database(monkeypatch, database_url, **POOL)
    container = Container()
    # Any request that waited past pool_timeout would be a 503.
    assert await burst(serving(container, sys.modules[__name__])) == {200: CONCURRENT}
    assert container.engine().pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_the_tutorial_pattern_under_the_same_load_times_out(database_url: URL) -> None:
    engine = sa.create_engine(database_url, pool_size=5, max_overflow=5, pool_timeout=2)

    def get_db() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    app = FastAPI()

    @app.get("/sleep")
    def tutorial_sleep(db: Annotated[Session, Depends(get_db)]) -> Slept:
        return Slept(pid=int(db.scalar(sa.text("SELECT pg_backend_pid(), pg_sleep(0.01)")) or 0))

    try:
        statuses = await burst(app)
    finally:
        engine.dispose()
    assert statuses[500] > 0, statuses
