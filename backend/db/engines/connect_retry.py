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

from backend.db.engines.errors import is_transient_connect_error
from backend.db.engines.greenlet import await_

FIRST_BACKOFF = 0.2  # seconds; doubled after each failed attempt, with ±50% jitter


def retry_connects(engine: Engine, retries: int, budget: float) -> None:
    """Make `engine` (a sync engine, or an AsyncEngine's sync_engine) retry failed connects.

    No attempt starts later than `budget` seconds after the first, however many retries are
    allowed: with a doubling pause, 8 retries would otherwise wait about 51 s in pauses alone.
    """

    @event.listens_for(engine, "do_connect")
    def connect_with_retry(
        dialect: Dialect,
        record: ConnectionPoolEntry,
        cargs: tuple[Any, ...],
        cparams: dict[str, Any],
    ) -> Any:
        backoff = FIRST_BACKOFF
        deadline = time.monotonic() + budget
        for attempt in range(retries + 1):
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as exc:
                left = deadline - time.monotonic()
                if attempt == retries or left <= 0 or not is_transient_connect_error(exc):
                    error = as_connect_error(exc, dialect.loaded_dbapi)
                    if error is exc:
                        raise
                    raise error from exc
            # The last pause ends at the deadline at the latest.
            pause = min(left, backoff * random.uniform(0.5, 1.5))  # noqa: S311 (jitter)
            # The async engine connects inside the event loop: sleeping there must not block it.
            await_(asyncio.sleep(pause)) if dialect.is_async else time.sleep(pause)
            backoff *= 2
        raise AssertionError("unreachable")


def as_connect_error(exc: Exception, dbapi: Any) -> Exception:
    """What a connect that failed for good raises: the same on both paths.

    psycopg2 raises OperationalError for whatever the server answers a connect with (unknown
    database, wrong password, too many connections), so the sync path calls each unavailable.
    asyncpg's server errors reach SQLAlchemy as the dialect's generic Error instead, which by
    SQLSTATE alone would make the same failure a 500 there (3D000, 28P01): it becomes the
    dialect's OperationalError too, with asyncpg's error, and so its SQLSTATE, kept.
    """
    operational: type[Exception] = dbapi.OperationalError
    from_driver: bool = isinstance(exc, dbapi.Error)
    if not from_driver:
        # asyncpg raises OSError (refused, reset) as it is; as the DBAPI's error, SQLAlchemy
        # wraps it like any other failed connect (OperationalError).
        return operational(str(exc))
    if getattr(exc, "sqlstate", None) and not isinstance(exc, operational):
        return operational(str(exc), getattr(exc, "orig", None))
    return exc
