"""Row 6: the link stalls: a proxy or a pooler holds everything and says nothing.

No error comes, only silence, and TCP keepalives are answered: each request must still end,
with a 504 (or 503) JSON reason, within a bound the settings give, and the app must serve again
once the link flows. The timeouts are scaled down from 30 s (statement) and 10 s (connect) to 2 s.
Each runs on the run's drivers: psycopg2 + asyncpg, or psycopg 3 sync + async
(BACKEND_TEST_DRIVER=psycopg, as CI's second pass runs the suite).
"""

import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend import Container
from backend.testing.drivers import run_driver
from backend.testing.front import TlsFront
from backend.testing.postgres import TestServer
from tests.conftest import use_database
from tests.faults.service import running_service

TIMEOUT = 2
SETTINGS = {"statement_timeout": str(TIMEOUT), "connect_timeout": str(TIMEOUT)}
# A liveness bound, not a speed: the statement timeout, then up to 2 s for asyncpg to close the
# dead connection gracefully, three times over for a loaded machine.
BOUND = 3 * (TIMEOUT + 2)
# psycopg 3 async, interrupted, cancels the statement and waits up to 5 s for the cancel to be
# sent and 5 s for the statement to end (psycopg >= 3.3.6; before, with no bound: 40 s and more).
PSYCOPG_CANCEL = 10
CALLS = [("GET", "/health/db"), ("POST", "/sync/pairs/s{n}"), ("POST", "/async/pairs/a{n}")]


def bound(path: str) -> float:
    return BOUND + (PSYCOPG_CANCEL if run_driver() == "psycopg" and "/async/" in path else 0)


@pytest.fixture
def front(postgres: TestServer, front_url: URL) -> Iterator[TlsFront]:
    assert postgres.front is not None
    yield postgres.front
    postgres.front.resume()


def call_all(client: TestClient, n: int) -> list[tuple[httpx.Response, float]]:
    """The three calls at once, so that each meets a pooled connection of its own."""

    def call(method_path: tuple[str, str]) -> tuple[httpx.Response, float]:
        method, path = method_path
        started = time.monotonic()
        response = client.request(method, path.format(n=n))
        return response, time.monotonic() - started

    with ThreadPoolExecutor(len(CALLS)) as pool:
        futures = [pool.submit(call, method_path) for method_path in CALLS]
        return [future.result(timeout=BOUND + PSYCOPG_CANCEL + 60) for future in futures]


def test_a_stalled_link_fails_each_request_in_bounded_time_and_the_app_recovers(
    monkeypatch: pytest.MonkeyPatch, front: TlsFront, front_url: URL
) -> None:
    longest = max(bound(path) for _, path in CALLS)
    with running_service(monkeypatch, front_url, **SETTINGS) as (client, _):
        for n in range(3):  # the pools fill with live connections
            assert [response.status_code for response, _ in call_all(client, n)] == [200] * 3

        front.stall()
        try:
            with ThreadPoolExecutor(1) as waiter:
                stalled = waiter.submit(call_all, client, 10)
                # Not stalled.result(): on a layer without the bound it would wait forever.
                deadline = time.monotonic() + longest
                while not stalled.done() and time.monotonic() < deadline:
                    time.sleep(0.1)
                finished = stalled.done()
                front.resume()  # lets a hung request end, so that a failure below is clean
                outcomes = stalled.result(timeout=60)
        finally:
            front.resume()

        assert finished, f"a request still waited after {longest} s on a stalled link"
        for (method, path), (response, waited) in zip(CALLS, outcomes, strict=True):
            # A warm connection that gets no answer is a timeout (504); once the pool has
            # dropped it, a new connect that gets none is an outage (503).
            answer = (response.status_code, response.json()["status"])
            assert answer in {(504, "timeout"), (503, "unavailable")}, (method, path, answer)
            assert waited <= bound(path), (method, path, waited)

        # The link flows again: the app serves without a restart.
        assert [response.status_code for response, _ in call_all(client, 20)] == [200] * 3


def test_a_runaway_statement_ends_at_the_statement_timeout(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, flavour: str
) -> None:
    with running_service(monkeypatch, database_url, **SETTINGS) as (client, _):
        started = time.monotonic()
        response = client.post(f"/{flavour}/slow/60")
        waited = time.monotonic() - started
        # Not an outage: 504, and no Retry-After inviting the client to run it again at once.
        assert response.status_code == 504
        assert "retry-after" not in response.headers
        assert response.json()["status"] == "timeout"
        assert "no answer from the server within 2 s" in response.json()["error"]
        assert waited <= BOUND
        # That connection was discarded; the next request has a working one.
        assert client.post(f"/{flavour}/pairs/after").status_code == 200


def test_a_slow_statement_ends_at_a_one_second_timeout(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, flavour: str
) -> None:
    """On a link that flows, each driver ends the wait at the timeout itself (psycopg 3 async
    too: the server answers its cancel at once)."""
    with running_service(monkeypatch, database_url, statement_timeout="1") as (client, _):
        started = time.monotonic()
        response = client.post(f"/{flavour}/slow/5")
        waited = time.monotonic() - started
        assert (response.status_code, response.json()["status"]) == (504, "timeout")
        assert "no answer from the server within 1 s" in response.json()["error"]
        assert 1 <= waited < 2.5, waited
        assert client.post(f"/{flavour}/pairs/after").status_code == 200


@pytest.mark.anyio
async def test_each_connection_tells_the_kernel_when_its_link_is_dead(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, flavour: str
) -> None:
    """A peer that is gone answers nothing, not even keepalives: the kernel then drops the
    connection after DATABASE_TCP_USER_TIMEOUT. Loopback's kernel always answers, so this reads
    the options on each path's socket."""
    use_database(monkeypatch, database_url, tcp_user_timeout="9")
    container = Container()
    if flavour == "sync":
        with container.engine().connect() as connection:
            fd = connection.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
            with socket.socket(fileno=os.dup(fd)) as sock:
                options = socket_options(sock)
        container.engine().dispose()
    else:
        engine = container.async_engine()
        async with engine.connect() as connection:
            raw: Any = (await connection.get_raw_connection()).driver_connection
            if run_driver() == "psycopg":  # libpq's socket, which psycopg gives
                with socket.socket(fileno=os.dup(raw.fileno())) as sock:
                    options = socket_options(sock)
            else:  # asyncpg offers no public way to its socket
                options = socket_options(raw._transport.get_extra_info("socket"))
        await engine.dispose()
    assert options == {"keepalive": 1, "idle": 3, "interval": 3, "count": 3, "user_timeout": 9000}


def socket_options(sock: Any) -> dict[str, int]:
    tcp = socket.IPPROTO_TCP
    return {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
        "interval": sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
        "count": sock.getsockopt(tcp, socket.TCP_KEEPCNT),
        "user_timeout": sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
    }
