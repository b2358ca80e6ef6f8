"""Probe an engine: round-trip latency, TLS, server version, pool figures."""

from time import perf_counter
from typing import TypedDict

from sqlalchemy import Engine, QueuePool, text

PROBE = text("SELECT current_setting('server_version')")


class PoolStatus(TypedDict):
    size: int | None
    checked_out: int | None
    overflow: int | None


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
        # The client's own view: behind Neon's proxy or a pooler, the server's pg_stat_ssl
        # describes the proxy's hop, not ours.
        info = getattr(connection.connection.dbapi_connection, "info", None)
        ssl = getattr(info, "ssl_in_use", False)
    latency_ms = (perf_counter() - started) * 1000
    return {
        "status": "ok",
        "latency_ms": round(latency_ms, 3),
        "ssl": bool(ssl),
        "server_version": str(server_version),
        "pool": pool_status(engine),
    }


def pool_status(engine: Engine) -> PoolStatus:
    pool = engine.pool
    if isinstance(pool, QueuePool):
        # SQLAlchemy counts overflow up from -pool_size; here only connections beyond the pool.
        overflow = max(0, pool.overflow())
        return {"size": pool.size(), "checked_out": pool.checkedout(), "overflow": overflow}
    # NullPool, StaticPool (test engines, serverless setups) keep no such figures.
    return {"size": None, "checked_out": None, "overflow": None}
