"""Settings → a SQLAlchemy engine with Neon's TLS, pool and timeout options."""

from psycopg2.extensions import libpq_version
from sqlalchemy import Engine, create_engine

from backend.db.url import psycopg2_url
from backend.settings import DatabaseSettings


def create_sync_engine(settings: DatabaseSettings) -> Engine:
    """Build the engine. Like every SQLAlchemy engine it connects on first use, not here."""
    return create_engine(
        psycopg2_url(settings, libpq_version()),
        echo=settings.echo,
        # Bound values can be personal data; they are shown only when SQL echo is asked for.
        hide_parameters=not settings.echo,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        pool_pre_ping=settings.pool_pre_ping,
    )
