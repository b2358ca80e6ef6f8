"""The pools' queues: waits for a connection made visible, and served in order on asyncio.

A request that waits for a pooled connection is the first sign of an undersized pool or
connection budget, long before the pool_timeout turns it into a 503. SQLAlchemy's QueuePool
blocks in its queue's `get` only when every connection is checked out and no overflow is
left, so timing those gets measures exactly that wait (connecting time is not counted).
"""

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection, QueuePool
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty, Queue

from backend.db.engines.error_reports import label
from backend.db.engines.greenlet import await_
from backend.settings import DatabaseSettings

# Private SQLAlchemy internals, for want of a public hook into how a checkout waits: a pool
# builds its queue from the class attribute `_queue_class` and keeps it as `_pool`; the queues
# are those of sqlalchemy.util.queue (Queue, AsyncAdaptedQueue and its asyncio.Queue `_queue`,
# Empty). The same from 2.0.30 to 2.1.9, tests/integration/test_pool_order.py checks them:
# this needs sqlalchemy<2.2.

logger = logging.getLogger("backend")
# SQLAlchemy names a pool's logger after its class, so these pools log as backend.db.engines.pool.*,
# under the app's "backend" logger: keep them at SQLAlchemy's own default for its loggers
# (WARNING, sqlalchemy/log.py), or every dispose and invalidation would reach the app's log.
logging.getLogger(__name__).setLevel(logging.WARNING)
T = TypeVar("T")
WINDOW = 60.0  # seconds over which "the slowest recent wait" is kept
WARN_EVERY = 10.0  # at most one warning per pool this often: a busy pool would flood the log


def pool_sizes(settings: DatabaseSettings, read_only: bool) -> tuple[int, int]:
    """(pool_size, max_overflow) of a write or a read engine's pool."""
    if not read_only:
        return settings.pool_size, settings.max_overflow
    size = settings.pool_size if settings.read_pool_size is None else settings.read_pool_size
    overflow = (
        settings.max_overflow if settings.read_max_overflow is None else settings.read_max_overflow
    )
    return size, overflow


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


class FairAsyncQueue(AsyncAdaptedQueue[T]):
    """An asyncio pool queue that gives a returned connection to the longest waiter.

    SQLAlchemy's AsyncAdaptedQueue.get takes a connection that is in the queue without
    awaiting, and asyncio.Queue wakes a waiter without handing it the item: a request that
    reaches `get` between the two takes the connection, and the waiter it was meant for goes
    back to the end of the line (the threaded pool's form of it: sqlalchemy/sqlalchemy#7679).
    Request sessions make that window the common case: a session is closed after the
    response, so the same client's next request is already arriving when its connection
    comes back. Measured in bench at c=64 on a pool of 10: 35% of waits were overtaken, the
    p99 of AsyncSessionDep was 0.6-1.9 s at a p50 of 60 ms, its longest pool wait 1.3 s.
    Handing the connection to the oldest waiter took the p99 to 0.08-0.19 s, req/s unchanged.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: deque[asyncio.Future[T]] = deque()

    @property
    def waiting(self) -> int:
        """How many are waiting for a connection now."""
        return sum(not waiter.done() for waiter in self._waiters)

    def put_nowait(self, item: T) -> None:
        if not self._hand_over(item):
            super().put_nowait(item)  # Full: the pool closes this overflow connection

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        # A connection in the queue means no waiter is left to hand it to: take it.
        if not block or not self.empty():
            return self.get_nowait()
        # The pool calls `get` synchronously inside SQLAlchemy's greenlet (this queue is
        # AsyncAdaptedQueue's, whose `get` is sync too): the wait is awaited from there.
        return await_(self._wait(timeout))

    async def _wait(self, timeout: float | None) -> T:
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                if isinstance(exc, TimeoutError):
                    return waiter.result()  # handed over as the timeout fired: it came in time
                self._give_back(waiter.result())  # cancelled after the hand-over
            else:
                waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise Empty() from exc  # QueuePool turns this into its pool TimeoutError
            raise

    def _hand_over(self, item: T) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            # A waiter of a loop that has gone (a TestClient's) is never resumed: skip it.
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(item)
                return True
        return False

    def _give_back(self, item: T) -> None:
        # The pool counted this connection as checked out: it must not be lost, even if the
        # queue filled up meanwhile (one idle connection over pool_size until the next put).
        if not self._hand_over(item):
            try:
                self._queue.put_nowait(item)
            except asyncio.QueueFull:
                self._queue._put(item)


class _TimedAsyncQueue(_Timed[T], FairAsyncQueue[T]):
    pass


class TimedQueuePool(QueuePool):
    """QueuePool whose waits for a free connection are counted (`waits`)."""

    _queue_class = _TimedQueue  # type: ignore[assignment]
    host = "-"  # its engine's, set by the engine: which server's pool ran out

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Its warn_after is set by the engine, from DATABASE_POOL_WAIT_WARNING.
        self._pool.waits = PoolWaits(warn_after=1.0)  # type: ignore[attr-defined]

    def connect(self) -> PoolProxiedConnection:
        try:
            return super().connect()
        except PoolTimeoutError as error:
            label(error, self.host)
            raise

    @property
    def waits(self) -> PoolWaits:
        return self._pool.waits  # type: ignore[attr-defined,no-any-return]

    def recreate(self) -> QueuePool:
        # A pool is recreated on dispose and after a disconnect: keep counting in the new one.
        new = super().recreate()
        new._pool.waits = self.waits  # type: ignore[attr-defined]
        new.host = self.host  # type: ignore[attr-defined]
        return new


class TimedAsyncQueuePool(TimedQueuePool, AsyncAdaptedQueuePool):
    """The same for asyncio engines, its waiters served first come, first served."""

    _queue_class = _TimedAsyncQueue  # type: ignore[assignment]

    @property
    def waiting(self) -> int:
        """How many are waiting for a connection now."""
        return self._pool.waiting  # type: ignore[attr-defined,no-any-return]
