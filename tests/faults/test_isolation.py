"""Row 6: 10 000 requests, sync and async mixed: no session ever serves two requests."""

import asyncio
import sys
import threading
from uuid import uuid4

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter
from sqlalchemy.engine import URL
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.container import AsyncSessionDep, Container, SessionDep
from tests.conftest import serving, use_database

REQUESTS = 10_000
router = APIRouter()
sessions: dict[int, tuple[Session | AsyncSession, set[str]]] = {}
lock = threading.Lock()


def record(request_id: str, session: Session | AsyncSession) -> None:
    with lock:  # the session is kept, so its id() cannot be reused by a later one
        sessions.setdefault(id(session), (session, set()))[1].add(request_id)


@router.get("/sync/tagged/{request_id}")
@inject
def tagged(request_id: str, session: SessionDep) -> None:
    record(request_id, session)
    session.scalar(sa.text("SELECT 1"))


@router.get("/async/tagged/{request_id}")
@inject
async def tagged_async(request_id: str, session: AsyncSessionDep) -> None:
    record(request_id, session)
    await session.scalar(sa.text("SELECT 1"))


@pytest.mark.anyio
async def test_ten_thousand_requests_ten_thousand_sessions(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    sessions.clear()
    use_database(monkeypatch, database_url, pool_size="10", max_overflow="10")
    container = Container()
    app = serving(container, sys.modules[__name__])
    paths = [f"/{('sync', 'async')[n % 2]}/tagged/{uuid4().hex}" for n in range(REQUESTS)]
    in_flight = asyncio.Semaphore(64)

    async def get(client: httpx.AsyncClient, path: str) -> int:
        async with in_flight:
            return (await client.get(path)).status_code

    # In the app's own loop, as uvicorn runs it: no test-client thread between requests.
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            statuses = await asyncio.gather(*(get(client, path) for path in paths))
        sync_pool, async_pool = container.engine().pool, container.async_engine().pool
        checked_out = (sync_pool.checkedout(), async_pool.checkedout())  # type: ignore[attr-defined]

    assert statuses == [200] * REQUESTS
    assert len(sessions) == REQUESTS
    assert all(len(requests) == 1 for _, requests in sessions.values())
    assert not any(session.in_transaction() for session, _ in sessions.values())
    assert checked_out == (0, 0)
