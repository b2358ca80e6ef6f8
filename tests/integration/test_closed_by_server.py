"""The replica watch's look at an idle connection: closed by the server (a FATAL, then EOF) or
alive, told without a round trip, on each driver that can serve a replica's engine."""

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from backend.db.reads.routing import _closed_by_server

DRIVERS = ["psycopg2", "psycopg", "psycopg-async", "asyncpg-async"]


def _terminate(admin_engine: sa.Engine, pid: int) -> None:
    with admin_engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    time.sleep(0.3)  # the FATAL and the EOF reach the client


def _sync(url: URL, driver: str, admin_engine: sa.Engine) -> tuple[bool, bool]:
    engine = sa.create_engine(url.set(drivername=f"postgresql+{driver}"), poolclass=sa.NullPool)
    with engine.connect() as connection:
        pid = connection.scalar(sa.text("SELECT pg_backend_pid()"))
        connection.commit()
        driver_connection: Any = connection.connection.driver_connection
        alive = _closed_by_server(driver_connection)
        _terminate(admin_engine, int(pid or 0))
        closed = _closed_by_server(driver_connection)
        connection.invalidate()
    return alive, closed


async def _async(url: URL, driver: str, admin_engine: sa.Engine) -> tuple[bool, bool]:
    engine = create_async_engine(url.set(drivername=f"postgresql+{driver}"), poolclass=sa.NullPool)
    async with engine.connect() as connection:
        pid = await connection.scalar(sa.text("SELECT pg_backend_pid()"))
        await connection.commit()
        raw = await connection.get_raw_connection()
        alive = _closed_by_server(raw.driver_connection)
        await asyncio.to_thread(_terminate, admin_engine, int(pid or 0))
        closed = _closed_by_server(raw.driver_connection)
        await connection.invalidate()
    await engine.dispose()
    return alive, closed


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_idle_connection_the_server_closed_is_seen_without_a_round_trip(
    postgres: Any, database_name: str, admin_engine: sa.Engine, driver: str
) -> None:
    name, _, path = driver.partition("-")
    if name == "psycopg":
        pytest.importorskip("psycopg")
    if name == "asyncpg":
        pytest.importorskip("asyncpg")
        # asyncpg takes no libpq words: TLS as the server's certificate allows, for this look.
        url = postgres.url(database_name).difference_update_query(["sslmode", "sslrootcert"])
    else:
        url = postgres.url(database_name)
    if path == "async":
        alive, closed = asyncio.run(_async(url, name, admin_engine))
    else:
        alive, closed = _sync(url, name, admin_engine)
    assert (alive, closed) == (False, True)
