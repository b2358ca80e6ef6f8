"""Row 2: a cold start holds new connections; a restarting compute refuses them for a while."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from backend.testing.front import TlsFront
from backend.testing.postgres import TestServer
from tests.faults.service import Load, assert_nothing_lost, running_service, wait_until


@pytest.fixture
def front(postgres: TestServer, front_url: URL) -> Iterator[TlsFront]:
    assert postgres.front is not None
    yield postgres.front
    postgres.front.connect_delay = 0
    postgres.front.refuse_for(0)


def test_requests_wait_for_a_waking_compute(
    monkeypatch: pytest.MonkeyPatch, front: TlsFront, front_url: URL, flavour: str
) -> None:
    front.connect_delay = 0.5  # Neon: "a few hundred milliseconds"
    with running_service(monkeypatch, front_url) as (client, _):
        load = Load(client, flavour)
        started = time.monotonic()
        burst = load.concurrent_burst(40, concurrency=10)
        waited = time.monotonic() - started
    assert [outcome.status for outcome in burst] == [200] * 40
    assert waited >= 0.5  # they did wait for it
    assert_nothing_lost(load, front_url)


def test_connects_refused_by_a_restarting_compute_are_retried(
    monkeypatch: pytest.MonkeyPatch, front: TlsFront, front_url: URL, flavour: str
) -> None:
    with running_service(monkeypatch, front_url) as (client, _):
        load = Load(client, flavour)
        front.refuse_for(0.5)  # "Couldn't connect to compute node"
        burst = load.concurrent_burst(20, concurrency=10)
    assert [outcome.status for outcome in burst] == [200] * 20
    assert_nothing_lost(load, front_url)


def test_without_retries_the_refusal_reaches_the_client_as_503(
    monkeypatch: pytest.MonkeyPatch, front: TlsFront, front_url: URL, flavour: str
) -> None:
    with running_service(monkeypatch, front_url, connect_retries="0") as (client, _):
        front.refuse_for(5)
        response = client.post(f"/{flavour}/pairs/refused")
    assert response.status_code == 503
    assert "Couldn't connect to compute node" in response.json()["error"]
    assert response.headers["retry-after"] == "1"


def test_a_statement_is_never_retried(
    monkeypatch: pytest.MonkeyPatch,
    front: TlsFront,
    front_url: URL,
    database_url: URL,
    flavour: str,
) -> None:
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SEQUENCE fault_statement_runs")
    with running_service(monkeypatch, front_url) as (client, _), ThreadPoolExecutor(1) as pool:
        answer = pool.submit(client.post, f"/{flavour}/once/2")
        wait_until(lambda: front.traffic.flights_up >= 3)  # the statement is running
        time.sleep(0.3)
        front.drop_connections()  # the connection dies under the statement
        response = answer.result(timeout=30)
    with engine.connect() as connection:
        runs = connection.scalar(sa.text("SELECT last_value FROM fault_statement_runs"))
    engine.dispose()
    assert response.status_code == 503
    assert runs == 1
