"""The connection budget: the read engines' own pools, capped apart, and how a deployment's
connections are counted (what `python -m backend check` and docs/operations.md say)."""

from typing import Any

import pytest

from backend import Container
from backend.doctor.budget import connection_budget

LOCAL = "postgresql://u:p@127.0.0.1:5432/db"  # never connected to: engines connect on use


def container(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Container:
    monkeypatch.setenv("DATABASE_URL", LOCAL)
    for name, value in settings.items():
        monkeypatch.setenv(f"DATABASE_{name.upper()}", value)
    return Container()


def sizes(pool: Any) -> tuple[int, int]:
    return pool.size(), pool._max_overflow


def test_the_read_pools_follow_the_write_pool_unless_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    same = container(monkeypatch, pool_size="3", max_overflow="2")
    for engine in (same.read_engine(), same.async_read_engine().sync_engine):
        assert sizes(engine.pool) == (3, 2)


def test_read_pools_capped_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    capped = container(monkeypatch, read_pool_size="2", read_max_overflow="0")
    assert sizes(capped.engine().pool) == (5, 5)
    assert sizes(capped.async_engine().sync_engine.pool) == (5, 5)
    assert sizes(capped.read_engine().pool) == (2, 0)
    assert sizes(capped.async_read_engine().sync_engine.pool) == (2, 0)


def test_the_budget_of_the_defaults_is_forty_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = container(monkeypatch).settings()
    budget = connection_budget(settings, workers=4)
    assert budget.engines == ("engine", "async_engine", "read_engine", "async_read_engine")
    assert (budget.per_worker, budget.total) == (40, 160)
    assert budget.explain() == "4 workers x (10 + 10 + 10 + 10) = 160"


def test_the_budget_counts_the_engines_named(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = container(monkeypatch, read_pool_size="1", read_max_overflow="1").settings()
    named = connection_budget(settings, 2, ("engine", "read_engine"))
    assert (named.per_engine, named.total) == ((10, 2), 24)
    assert named.explain() == "2 workers x (10 + 2) = 24"
    # A count says not which: each at the larger pool, an upper bound.
    counted = connection_budget(settings, 1, 2)
    assert (counted.per_engine, counted.total) == ((10, 10), 20)
    assert connection_budget(settings, 1, ("engine",)).explain() == "1 worker x 10 = 10"
