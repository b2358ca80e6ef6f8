"""Row 6: 10 000 requests, sync and async mixed, each with a sub-dependency on the session:
one session per request, shared by its dependency, never by another request, closed once."""

import asyncio
import sys
import threading
from collections import Counter
from typing import Annotated, Any
from uuid import uuid4

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from dependency_injector import providers
from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends
from sqlalchemy.engine import URL
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import AsyncSessionDep, Container, SessionDep
from backend.db.sessions.scope import make_async_session_maker, make_session_maker
from tests.conftest import serving, use_database

REQUESTS = 10_000
router = APIRouter()
requests_of: dict[int, set[str]] = {}
closes: Counter[int] = Counter()
kept: list[Any] = []  # so that no id() is reused by a later session
lock = threading.Lock()


class CountedSession(Session):
    def close(self) -> None:
        with lock:
            closes[id(self)] += 1
        super().close()


def record(request_id: str, session: Session | AsyncSession) -> None:
    with lock:
        requests_of.setdefault(id(session), set()).add(request_id)
        kept.append(session)


@inject
def tag(request_id: str, session: SessionDep) -> Session:
    record(request_id, session)
    return session


@inject
async def tag_async(request_id: str, session: AsyncSessionDep) -> AsyncSession:
    record(request_id, session)
    return session


@router.get("/sync/tagged/{request_id}")
@inject
def tagged(request_id: str, session: SessionDep, tagged: Annotated[Session, Depends(tag)]) -> None:
    assert tagged is session
    record(request_id, session)
    session.scalar(sa.text("SELECT 1"))


@router.get("/async/tagged/{request_id}")
@inject
async def tagged_async(
    request_id: str, session: AsyncSessionDep, tagged: Annotated[AsyncSession, Depends(tag_async)]
) -> None:
    assert tagged is session
    record(request_id, session)
    await session.scalar(sa.text("SELECT 1"))


@pytest.mark.anyio
async def test_ten_thousand_requests_ten_thousand_sessions(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    use_database(monkeypatch, database_url, pool_size="10", max_overflow="10")
    container = Container()
    container.session_maker.override(
        providers.Singleton(make_session_maker, container.engine, session_class=CountedSession)
    )
    container.async_session_maker.override(
        providers.Singleton(
            make_async_session_maker, container.async_engine, sync_session_class=CountedSession
        )
    )
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
    assert len(requests_of) == REQUESTS
    assert all(len(requests) == 1 for requests in requests_of.values())
    # An AsyncSession closes through its sync session: one count per request either way.
    sessions = {id(getattr(s, "sync_session", s)) for s in kept}
    assert len(sessions) == REQUESTS
    assert all(closes[session] == 1 for session in sessions)
    assert checked_out == (0, 0)
