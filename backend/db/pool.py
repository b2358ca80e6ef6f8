"""Pool pressure made visible: how often and how long requests waited for a connection.

A request that waits for a pooled connection is the first sign of an undersized pool or
connection budget, long before the pool_timeout turns it into a 503. SQLAlchemy's QueuePool
blocks in its queue's `get` only when every connection is checked out and no overflow is
left, so timing those gets measures exactly that wait (connecting time is not counted).
"""

import logging
import threading
import time
from typing import Any, Generic, TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool
from sqlalchemy.util.queue import AsyncAdaptedQueue, Queue

logger = logging.getLogger("backend")
# SQLAlchemy names a pool's logger after its class, so these pools log as backend.db.pool.*,
# under the app's "backend" logger: keep them at SQLAlchemy's own default for its loggers
# (WARNING, sqlalchemy/log.py), or every dispose and invalidation would reach the app's log.
logging.getLogger(__name__).setLevel(logging.WARNING)
T = TypeVar("T")
WINDOW = 60.0  # seconds over which "the slowest recent wait" is kept
WARN_EVERY = 10.0  # at most one warning per pool this often: a busy pool would flood the log


class PoolWaits:
    """Counts the waits of one pool and keeps the slowest of the last minute."""

    def __init__(self, warn_after: float) -> None:
        self.warn_after = warn_after
        self.count = 0
        self._slowest = 0.0
        self._window_start = time.monotonic()
        self._last_warning = float("-inf")
        self._lock = threading.Lock()

    def add(self, seconds: float, timeout: float | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.count += 1
            if now - self._window_start > WINDOW:
                self._window_start, self._slowest = now, 0.0
            self._slowest = max(self._slowest, seconds)
            warn = seconds > self.warn_after and now - self._last_warning > WARN_EVERY
            if warn:
                self._last_warning = now
        if warn:
            logger.warning(
                "a request waited %.2f s for a pooled connection (pool_timeout %s s): the pool "
                "is too small for this load; raise DATABASE_POOL_SIZE or DATABASE_MAX_OVERFLOW "
                "within the connection budget, or shorten what holds connections",
                seconds, timeout,
            )  # fmt: skip

    def slowest_recent(self) -> float:
        with self._lock:
            fresh = time.monotonic() - self._window_start <= WINDOW
            return self._slowest if fresh else 0.0


class _Timed(Generic[T]):
    waits: PoolWaits

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if not block:
            return super().get(block, timeout)  # type: ignore[misc,no-any-return]
        started = time.monotonic()
        try:
            return super().get(block, timeout)  # type: ignore[misc,no-any-return]
        finally:
            self.waits.add(time.monotonic() - started, timeout)


class _TimedQueue(_Timed[T], Queue[T]):
    pass


class _TimedAsyncQueue(_Timed[T], AsyncAdaptedQueue[T]):
    pass


class TimedQueuePool(QueuePool):
    """QueuePool whose waits for a free connection are counted (`waits`)."""

    _queue_class = _TimedQueue  # type: ignore[assignment]

    def __init__(self, *args: Any, wait_warning: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool.waits = PoolWaits(wait_warning)  # type: ignore[attr-defined]

    @property
    def waits(self) -> PoolWaits:
        return self._pool.waits  # type: ignore[attr-defined,no-any-return]

    def recreate(self) -> QueuePool:
        # A pool is recreated on dispose and after a disconnect: keep counting in the new one.
        new = super().recreate()
        new._pool.waits = self.waits  # type: ignore[attr-defined]
        return new


class TimedAsyncQueuePool(TimedQueuePool, AsyncAdaptedQueuePool):
    _queue_class = _TimedAsyncQueue  # type: ignore[assignment]
