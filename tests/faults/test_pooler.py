"""Row 5: asyncpg behind PgBouncer in transaction mode, with our settings and without."""

import asyncio
import ssl

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend import Container
from backend.testing.postgres import TestServer
from tests.conftest import use_database

STATEMENTS = 1000
POOL = {"pool_size": 30, "max_overflow": 0, "pool_timeout": 60}  # more clients than servers (20)


async def run_statements(engine: AsyncEngine) -> list[object]:
    async def one(number: int) -> object:
        async with engine.connect() as connection:
            return await connection.scalar(sa.text("SELECT cast(:n AS integer)"), {"n": number})

    try:
        return await asyncio.gather(*(one(n) for n in range(STATEMENTS)), return_exceptions=True)
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_our_async_engine_runs_1000_concurrent_statements_through_pgbouncer(
    monkeypatch: pytest.MonkeyPatch, pooler_url: URL
) -> None:
    use_database(
        monkeypatch, pooler_url, pooler="pgbouncer", **{k: str(v) for k, v in POOL.items()}
    )
    results = await run_statements(Container().async_engine())
    assert [result for result in results if isinstance(result, Exception)] == []
    assert results == list(range(STATEMENTS))


@pytest.mark.anyio
async def test_asyncpg_defaults_break_on_pgbouncer(postgres: TestServer, pooler_url: URL) -> None:
    """The control: the same load with asyncpg's defaults hits prepared statements."""
    assert postgres.ca_file is not None
    plain = pooler_url.set(drivername="postgresql+asyncpg", query={})
    context = ssl.create_default_context(cafile=str(postgres.ca_file))
    engine = create_async_engine(plain, connect_args={"ssl": context}, **POOL)
    results = await run_statements(engine)
    errors = [str(result) for result in results if isinstance(result, Exception)]
    assert errors
    assert all("prepared statement" in error for error in errors), errors[:3]
