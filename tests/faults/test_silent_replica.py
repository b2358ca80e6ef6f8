"""A read replica that accepts connections and never answers (DATABASE_READ_URL).

/health/db waits for it once, briefly, and then answers from what is known until its retry
is due; health checks, however many, never keep a session route waiting.
"""

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter
from sqlalchemy.engine import URL

from backend import Container, SessionDep
from tests.conftest import serving, use_database

router = APIRouter()


@router.get("/pid")
@inject
def pid(session: SessionDep) -> int:
    return int(session.scalar(sa.text("SELECT pg_backend_pid()")) or 0)


@pytest.fixture
def silent_replica() -> Iterator[int]:
    """A loopback listener that accepts every connection and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed: the test is over
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for connection in accepted:
        connection.close()


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch, database_url: URL, silent_replica: int) -> Container:
    use_database(monkeypatch, database_url, connect_timeout="4")
    replica = f"postgresql://reader:secret@127.0.0.1:{silent_replica}/replica?sslmode=disable"
    monkeypatch.setenv("DATABASE_READ_URL", replica)
    return Container()


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get(path)
    return response, time.monotonic() - started


@pytest.mark.anyio
async def test_a_silent_replica_costs_health_one_short_wait(container: Container) -> None:
    app = serving(container, sys.modules[__name__])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first, first_took = await timed_get(client, "/health/db")
            later = [await timed_get(client, "/health/db") for _ in range(3)]
    assert first_took < 2.5, first_took  # not the 4 s connect timeout
    assert first.status_code == 200, first.text  # the primary is up
    replica = first.json()["replicas"][0]
    assert replica["status"] == "unavailable"
    assert "no answer within" in replica["error"]
    for response, took in later:  # from what is known: the retry is not due yet
        assert response.json()["replicas"][0]["status"] == "unavailable"
        assert took < 0.5, took


@pytest.mark.anyio
async def test_health_checks_do_not_keep_session_routes_waiting(container: Container) -> None:
    app = serving(container, sys.modules[__name__])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/pid")).status_code == 200  # connected, warmed up
            checks = [asyncio.create_task(client.get("/health/db")) for _ in range(40)]
            await asyncio.sleep(0.2)  # every check under way
            response, took = await timed_get(client, "/pid")
            statuses = {r.status_code for r in await asyncio.gather(*checks)}
    assert response.status_code == 200, response.text
    assert took < 1.0, took
    assert statuses == {200}
