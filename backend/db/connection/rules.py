"""Every path's URL rules at once, without building an engine or opening a connection.

The async engine is built on first use, so a setting only its path reads (a `command_timeout`
that is not a number, say) would otherwise pass the start and fail the first async request.
"""

from psycopg2.extensions import libpq_version

from backend.db.connection.url import asyncpg_target, psycopg2_url
from backend.settings import DatabaseSettings


def check_rules(settings: DatabaseSettings) -> None:
    """Raise the ConfigurationError either engine would raise when built from `settings`."""
    psycopg2_url(settings, libpq_version())
    asyncpg_target(settings)
