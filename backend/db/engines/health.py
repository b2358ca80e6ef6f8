"""Probe an engine: round-trip latency, TLS, server version, pool figures."""

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from time import perf_counter
from typing import Any, TypedDict
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, QueuePool, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db.engines.pool import TimedQueuePool

PROBE = text("SELECT current_setting('server_version')")
SERVER_SEES_TLS = text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


class PoolStatus(TypedDict):
    size: int | None
    checked_out: int | None
    overflow: int | None
    # Requests that waited for a free connection, and the slowest wait of the last minute.
    waits: int | None
    slowest_wait_ms: float | None


class DatabaseHealth(TypedDict):
    status: str
    latency_ms: float
    ssl: bool
    server_version: str
    pool: PoolStatus


def probe(engine: Engine) -> DatabaseHealth:
    """Check out a connection and ask the server; raises what the driver raises."""
    started = perf_counter()
    with engine.connect() as connection:
        server_version = connection.scalar(PROBE)
        ssl = connection_uses_tls(connection)
    return _healthy(engine, started, ssl, server_version)


async def probe_async(engine: AsyncEngine) -> DatabaseHealth:
    """probe() on an async engine (one the app gave the container: its only engine)."""
    started = perf_counter()
    async with engine.connect() as connection:
        server_version = await connection.scalar(PROBE)
        raw = await connection.get_raw_connection()
        ssl = libpq_uses_tls(raw.driver_connection)
        if ssl is None:
            # asyncpg says nothing public of its TLS: the server's view of this hop, which is
            # the client's own unless a proxy stands between.
            ssl = await connection.scalar(SERVER_SEES_TLS)
    return _healthy(engine.sync_engine, started, ssl, server_version)


def _healthy(engine: Engine, started: float, ssl: object, server_version: object) -> DatabaseHealth:
    return {
        "status": "ok",
        "latency_ms": round((perf_counter() - started) * 1000, 3),
        "ssl": bool(ssl),
        "server_version": str(server_version),
        "pool": pool_status(engine),
    }


# The health probes' own threads: a probe waits for a connect, so in FastAPI's threadpool a
# burst of health checks (or one silent server) would hold the workers sync routes need.
PROBE_THREADS = 8
_running: WeakKeyDictionary[Engine, Future[DatabaseHealth]] = WeakKeyDictionary()


@cache
def prober() -> ThreadPoolExecutor:
    # Made on first use, so importing this module starts no thread.
    return ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="backend-health-probe")


async def probe_shared(engine: Engine) -> DatabaseHealth:
    """probe(engine) on the probes' own threads; calls made meanwhile share its answer."""
    running = _running.get(engine)
    if running is None or running.done():
        running = _running[engine] = prober().submit(probe, engine)
    # Shielded: a caller that gives up does not cancel the probe the others wait for.
    return await asyncio.shield(asyncio.wrap_future(running))


def connection_uses_tls(connection: Connection) -> bool:
    # The client's own view: behind Neon's proxy or a pooler, the server's pg_stat_ssl
    # describes the proxy's hop, not ours.
    return bool(libpq_uses_tls(connection.connection.driver_connection))


def libpq_uses_tls(driver_connection: Any) -> bool | None:
    """Whether a libpq driver's connection (psycopg2, psycopg 3 sync or async) runs over TLS,
    as libpq says; None for a driver without libpq (asyncpg)."""
    pgconn = getattr(driver_connection, "pgconn", None)  # psycopg 3: info has no ssl_in_use
    if pgconn is not None:
        return bool(pgconn.ssl_in_use)
    info = getattr(driver_connection, "info", None)  # psycopg2's ConnectionInfo
    if info is not None and hasattr(info, "ssl_in_use"):
        return bool(info.ssl_in_use)
    return None


def pool_status(engine: Engine) -> PoolStatus:
    pool = engine.pool
    if isinstance(pool, QueuePool):
        waits = pool.waits if isinstance(pool, TimedQueuePool) else None
        return {
            "size": pool.size(),
            "checked_out": pool.checkedout(),
            # SQLAlchemy counts overflow up from -pool_size; here only connections beyond it.
            "overflow": max(0, pool.overflow()),
            "waits": waits.count if waits else None,
            "slowest_wait_ms": round(waits.slowest_recent() * 1000, 3) if waits else None,
        }
    # NullPool, StaticPool (test engines, serverless setups) keep no such figures.
    return dict.fromkeys(PoolStatus.__annotations__)  # type: ignore[return-value]
