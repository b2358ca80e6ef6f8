"""Admission to sync sessions, the threadpool deadlock's cure, holds for every idiom and for
every kind of connection, and is bounded.

- 256 concurrent requests on a pool of 5 + 5: SessionDep and dependency-injector's own
  `Depends(Provide[Container.session])` with @inject, in an installed app and in a plain
  `FastAPI()` with the RequestScopeMiddleware added by hand; `Depends(get_session)` in a
  plain `FastAPI()` without the layer.
- 40 open WebSockets that used a sync session do not keep a sync route waiting.
- A request that cannot be admitted within the pool_timeout is answered 503, as a full pool.
"""

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Annotated

import anyio.to_thread
import httpx2 as httpx
import pytest
import sqlalchemy as sa
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI, WebSocket, WebSocketDisconnect
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.engine import URL
from sqlmodel import Session

from backend import Container, SessionDep
from backend.db.session import get_session
from backend.middleware import RequestScopeMiddleware
from tests.conftest import serving, use_database

CONCURRENT = 256
POOL = {"pool_size": "5", "max_overflow": "5", "pool_timeout": "5"}
QUERY = sa.text("SELECT pg_backend_pid(), pg_sleep(0.01)")


class Slept(BaseModel):  # a response model: FastAPI validates it in the threadpool
    pid: int


router = APIRouter()


@router.get("/alias")
@inject
def alias(session: SessionDep) -> Slept:
    return Slept(pid=int(session.scalar(QUERY) or 0))


@router.get("/di")
@inject
def dependency_injectors_idiom(session: Session = Depends(Provide[Container.session])) -> Slept:
    return Slept(pid=int(session.scalar(QUERY) or 0))


@router.get("/sleep/{seconds}")
@inject
def sleep(seconds: float, session: SessionDep) -> Slept:
    return Slept(pid=int(session.scalar(sa.text("SELECT pg_sleep(:s), 1"), {"s": seconds}) or 0))


@router.websocket("/ws")
@inject
async def idle_websocket(websocket: WebSocket, session: SessionDep) -> None:
    await websocket.accept()
    session.scalar(sa.text("SELECT 1"))
    session.commit()  # its connection is back in the pool
    await websocket.send_text("ready")
    with contextlib.suppress(WebSocketDisconnect):
        await websocket.receive_text()  # idle until the client leaves


async def burst(app: FastAPI, path: str, count: int = CONCURRENT) -> Counter[int]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.gather(*(client.get(path) for _ in range(count)))
    return Counter(response.status_code for response in responses)


def installed(container: Container) -> FastAPI:
    return serving(container, sys.modules[__name__])


def by_hand(container: Container) -> FastAPI:
    """A plain FastAPI() with the layer's middleware added by hand, no install()."""
    container.wire(modules=[sys.modules[__name__]])
    app = FastAPI()
    app.include_router(router)
    app.add_middleware(RequestScopeMiddleware)
    return app


@pytest.mark.anyio
@pytest.mark.parametrize("make_app", [installed, by_hand])
@pytest.mark.parametrize("path", ["/alias", "/di"])
async def test_256_concurrent_requests_in_every_idiom_on_a_pool_of_10(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, make_app: object, path: str
) -> None:
    assert anyio.to_thread.current_default_thread_limiter().total_tokens == 40
    use_database(monkeypatch, database_url, **POOL)
    container = Container()
    app = make_app(container)  # type: ignore[operator]
    # A request that waited past pool_timeout would be a 503 (a 500 without install()).
    assert await burst(app, path) == {200: CONCURRENT}
    assert container.engine().pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_256_concurrent_requests_on_get_session_in_a_plain_app(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    # No layer at all: Depends(get_session)'s own yield dependency is admitted too.
    use_database(monkeypatch, database_url, **POOL)
    app = FastAPI()

    @app.get("/plain")
    def plain(session: Annotated[Session, Depends(get_session)]) -> Slept:
        return Slept(pid=int(session.scalar(QUERY) or 0))

    assert await burst(app, "/plain") == {200: CONCURRENT}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, database_url: URL) -> Iterator[TestClient]:
    use_database(monkeypatch, database_url, pool_size="5", max_overflow="5", pool_timeout="3")
    app = serving(Container(), sys.modules[__name__])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_open_websockets_do_not_keep_sync_routes_waiting(client: TestClient) -> None:
    with ThreadPoolExecutor(1) as pool, ExitStack() as stack:
        for _ in range(40):  # as many as FastAPI's threadpool has workers
            websocket = stack.enter_context(client.websocket_connect("/ws"))
            assert websocket.receive_text() == "ready"
        started = time.monotonic()
        answer = pool.submit(client.get, "/alias")
        # Held up, it would wait for a WebSocket to close: at the stack's exit, below.
        response = answer.result(timeout=10)
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert elapsed < 1.5, elapsed  # no wait for a slot: the pool had connections to give


@pytest.mark.anyio
async def test_admission_waits_no_longer_than_the_pool_timeout(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    # Two workers, so two slow requests hold every slot; the pool itself has room.
    anyio.to_thread.current_default_thread_limiter().total_tokens = 2
    use_database(monkeypatch, database_url, pool_size="5", max_overflow="5", pool_timeout="1")
    app = installed(Container())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            slow = [asyncio.create_task(client.get("/sleep/4")) for _ in range(2)]
            await asyncio.sleep(0.5)  # both admitted, both sleeping on the server
            started = time.monotonic()
            response = await client.get("/alias")
            elapsed = time.monotonic() - started
            assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200]
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert "pool_timeout" in response.json()["error"]
    assert 0.9 < elapsed < 2.5, elapsed
