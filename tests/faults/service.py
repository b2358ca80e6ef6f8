"""A throwaway service for the fault suite: each request writes a pair of rows in one transaction.

The pair is the loss detector: a row without its partner means a half-applied transaction, and
a key answered 2xx without its rows means an acknowledged write was lost.
"""

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from uuid import uuid4

import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlmodel import Field, Session, SQLModel

from backend import AsyncSessionDep, Container, SessionDep
from tests.conftest import serving, use_database


class PairRow(SQLModel, table=True):
    __tablename__ = "fault_pair"
    key: str = Field(primary_key=True)
    side: str = Field(primary_key=True)


router = APIRouter()


@router.post("/sync/pairs/{key}")
@inject
def write_pair(key: str, session: SessionDep) -> dict[str, str]:
    session.add_all([PairRow(key=key, side="a"), PairRow(key=key, side="b")])
    session.commit()
    return {"key": key}


@router.post("/async/pairs/{key}")
@inject
async def write_pair_async(key: str, session: AsyncSessionDep) -> dict[str, str]:
    session.add_all([PairRow(key=key, side="a"), PairRow(key=key, side="b")])
    await session.commit()
    return {"key": key}


@router.post("/sync/slow/{seconds}")
@inject
def hold_connection(seconds: float, session: SessionDep) -> dict[str, float]:
    session.scalar(sa.text("SELECT pg_sleep(:s)"), {"s": seconds})
    return {"slept": seconds}


@router.post("/async/slow/{seconds}")
@inject
async def hold_connection_async(seconds: float, session: AsyncSessionDep) -> dict[str, float]:
    await session.scalar(sa.text("SELECT pg_sleep(:s)"), {"s": seconds})
    return {"slept": seconds}


@router.post("/sync/once/{seconds}")
@inject
def count_then_wait(seconds: float, session: SessionDep) -> None:
    # nextval() is not rolled back: the sequence counts how often the server ran this statement.
    session.scalar(sa.text("SELECT nextval('fault_statement_runs'), pg_sleep(:s)"), {"s": seconds})


@router.post("/async/once/{seconds}")
@inject
async def count_then_wait_async(seconds: float, session: AsyncSessionDep) -> None:
    await session.scalar(
        sa.text("SELECT nextval('fault_statement_runs'), pg_sleep(:s)"), {"s": seconds}
    )


@contextmanager
def running_service(
    monkeypatch: pytest.MonkeyPatch, url: URL, **settings: str
) -> Iterator[tuple[TestClient, Container]]:
    use_database(monkeypatch, url, **settings)
    container = Container()
    app = serving(container, sys.modules[__name__])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, container


@dataclass
class Outcome:
    key: str
    status: int
    body: str


@dataclass
class Load:
    """`workers` threads writing pairs, one request after another, until stopped."""

    client: TestClient
    flavour: str
    workers: int = 8
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> "Load":
        self._pool = ThreadPoolExecutor(self.workers)
        self._futures = [self._pool.submit(self._work) for _ in range(self.workers)]
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._pool is not None
        for future in self._futures:
            future.result(timeout=60)  # a request that hangs fails the test here
        self._pool.shutdown()

    def _work(self) -> None:
        while not self._stop.is_set():
            self.burst(1)

    def burst(self, count: int) -> list[Outcome]:
        results = []
        for _ in range(count):
            key = uuid4().hex
            response = self.client.post(f"/{self.flavour}/pairs/{key}")
            results.append(Outcome(key, response.status_code, response.text))
        with self._lock:
            self.outcomes.extend(results)
        return results

    def concurrent_burst(self, count: int, concurrency: int = 32) -> list[Outcome]:
        with ThreadPoolExecutor(concurrency) as pool:
            return [item for part in pool.map(self.burst, [1] * count) for item in part]

    def answered_ok(self) -> int:
        return sum(outcome.status < 300 for outcome in self.outcomes)


def rows_by_key(url: URL) -> dict[str, int]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with Session(engine) as session:
        query = sa.text("SELECT key, count(*) FROM fault_pair GROUP BY key")
        rows = {key: count for key, count in session.execute(query)}
    engine.dispose()
    return rows


def assert_nothing_lost(load: Load, url: URL) -> None:
    """Every 2xx key has both rows; no key has one row; every failure is a 503 JSON reason."""
    rows = rows_by_key(url)
    assert all(count == 2 for count in rows.values()), "a transaction was half applied"
    for outcome in load.outcomes:
        if outcome.status < 300:
            assert rows.get(outcome.key) == 2, f"acknowledged {outcome.key} was lost"
        else:
            # A commit whose answer was lost with the connection may have landed: both rows,
            # or (normally) neither, and the client was told the database was unavailable.
            assert outcome.status == 503, outcome
            assert '"status":"unavailable"' in outcome.body, outcome
            assert "Traceback" not in outcome.body


def wait_until(predicate: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("the condition did not come true in time")
