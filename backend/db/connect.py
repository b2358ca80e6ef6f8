"""Bounded connect retry with backoff: what a restarting or waking Neon compute needs.

Only connecting is retried, never a statement: a statement that failed may have run.
"""

import asyncio
import random
import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_only

from backend.db.errors import is_transient_connect_error

FIRST_BACKOFF = 0.2  # seconds; doubled after each failed attempt, with ±50% jitter


def retry_connects(engine: Engine, retries: int) -> None:
    """Make `engine` (a sync engine, or an AsyncEngine's sync_engine) retry failed connects."""

    @event.listens_for(engine, "do_connect")
    def connect_with_retry(
        dialect: Dialect,
        record: ConnectionPoolEntry,
        cargs: tuple[Any, ...],
        cparams: dict[str, Any],
    ) -> Any:
        backoff = FIRST_BACKOFF
        for attempt in range(retries + 1):
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as exc:
                if attempt == retries or not is_transient_connect_error(exc):
                    if isinstance(exc, dialect.loaded_dbapi.Error):
                        raise
                    # asyncpg raises OSError (refused, reset) as it is; as the DBAPI's error,
                    # SQLAlchemy wraps it like any other failed connect (OperationalError).
                    raise dialect.loaded_dbapi.OperationalError(str(exc)) from exc
            pause = backoff * random.uniform(0.5, 1.5)  # noqa: S311 (jitter, not a secret)
            # The async engine connects inside the event loop: sleeping there must not block it.
            await_only(asyncio.sleep(pause)) if dialect.is_async else time.sleep(pause)
            backoff *= 2
        raise AssertionError("unreachable")
