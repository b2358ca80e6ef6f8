"""Admission: how many requests may use sync sessions at once, and how long one waits.

A sync session holds its connection until the response is sent, and after a sync route FastAPI
still needs its threadpool. Were every worker a route waiting for a connection, the requests
holding the connections would wait for a worker for ever (backend/db/sessions/scope.py). So a
request that may use a sync session is admitted on the event loop first, and no more are
admitted than the threadpool has workers; the wait is bounded by the pool_timeout.
"""

import asyncio
from typing import Any
from weakref import WeakKeyDictionary

import anyio.to_thread
from sqlalchemy import QueuePool
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

DEFAULT_POOL_TIMEOUT = 30.0  # SQLAlchemy's own default


class AdmissionTimeout(PoolTimeoutError):
    """No admission to sync sessions within the pool_timeout: answered 503, as a full pool."""


def admission_gate() -> asyncio.Semaphore:
    """This event loop's admission gate: as many places as FastAPI's threadpool has workers.

    One per loop, shared by every app on it, as the threadpool is (anyio's default limiter,
    40; a TestClient runs each `with` in a new loop).
    """
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        workers = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
        gate = _gates[loop] = asyncio.Semaphore(workers)
    return gate


_gates: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()


async def acquire_admission(gate: asyncio.Semaphore, container: Any) -> None:
    """A place at `gate`, waited for no longer than the pool_timeout of `container`'s pool.

    Ends as a full pool does: AdmissionTimeout, a pool timeout, which the layer answers 503.
    """
    if not gate.locked():
        await gate.acquire()  # free: no timer to set up
        return
    timeout = _pool_timeout(container)
    try:
        async with asyncio.timeout(timeout):
            await gate.acquire()
    except TimeoutError:
        raise AdmissionTimeout(
            f"no sync session within {timeout:g} s (the pool_timeout): as many requests as "
            "FastAPI's threadpool has workers hold or await the pool's connections"
        ) from None


def _pool_timeout(container: Any) -> float:
    # A request waits for admission no longer than it would wait for a connection. Without
    # a container (the middleware added by hand), SQLAlchemy's default pool_timeout.
    if container is None:
        return DEFAULT_POOL_TIMEOUT
    try:
        pool = container.engine().pool
    except Exception:  # an app with no sync engine configured: no sync session either
        return DEFAULT_POOL_TIMEOUT
    return float(pool.timeout()) if isinstance(pool, QueuePool) else DEFAULT_POOL_TIMEOUT
