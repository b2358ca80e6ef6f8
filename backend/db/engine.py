"""Settings → the SQLAlchemy engines, sync (psycopg2) and async (asyncpg), with Neon's options."""

import logging
from typing import Any

from psycopg2.extensions import libpq_version
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.db.connect import retry_connects
from backend.db.url import asyncpg_target, psycopg2_url
from backend.settings import DatabaseSettings

logger = logging.getLogger(__name__)


def create_sync_engine(settings: DatabaseSettings) -> Engine:
    """Build the engine. Like every SQLAlchemy engine it connects on first use, not here."""
    engine = create_engine(psycopg2_url(settings, libpq_version()), **_engine_options(settings))
    retry_connects(engine, settings.connect_retries)
    return engine


def create_async_db_engine(settings: DatabaseSettings) -> AsyncEngine:
    """The asyncpg twin of create_sync_engine: same settings, same pool, translated URL."""
    target = asyncpg_target(settings)
    if "channel_binding" in target.dropped:
        logger.warning(
            "channel_binding is not enforced on the async path (asyncpg has no channel "
            "binding); the sync path enforces it for %r",
            target.url,
        )
    if ignored := sorted(set(target.dropped) - {"channel_binding"}):
        logger.warning("asyncpg has no equivalent of %s in DATABASE_URL; ignored", ignored)
    engine = create_async_engine(
        target.url, connect_args=target.connect_args, **_engine_options(settings)
    )
    retry_connects(engine.sync_engine, settings.connect_retries)
    return engine


def _engine_options(settings: DatabaseSettings) -> dict[str, Any]:
    return {
        "echo": settings.echo,
        # Bound values can be personal data; they are shown only when SQL echo is asked for.
        "hide_parameters": not settings.echo,
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout,
        "pool_recycle": settings.pool_recycle,
        "pool_pre_ping": settings.pool_pre_ping,
    }
