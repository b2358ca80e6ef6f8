"""Closing a request's sessions: off the event loop, and a busy connection discarded.

A ROLLBACK is a round trip: it runs on a small executor of its own, neither on the event loop
nor in FastAPI's threadpool, which may be full of requests waiting for connections. A close
that fails because the connection is still busy (a task that kept the session runs a
statement on it) discards that connection, so the pool gets its slot back at once.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from sqlalchemy import Connection
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

logger = logging.getLogger(__name__)

# A close waits for at most one round trip and never for a connection, so any bound avoids
# the deadlock; this one drains closes faster than a pool of Neon's recommended size fills.
CLOSE_THREADS = 16


async def close_session(session: Session | AsyncSession) -> None:
    """Close a session without blocking the event loop (and without FastAPI's threadpool)."""
    if isinstance(session, AsyncSession):
        if session.in_transaction():
            await session.close()  # a ROLLBACK: on the loop, asyncpg's I/O is async
        else:
            # Nothing to roll back, so no I/O: close the sync session underneath directly,
            # without AsyncSession.close()'s greenlet round trip (a third of the async
            # path's per-request cost when the session ran nothing, profiled in bench).
            session.sync_session.close()
    elif not session.in_transaction():
        session.close()  # nothing to roll back: no I/O
    else:
        # ROLLBACK is a round trip: off the event loop, and off FastAPI's threadpool.
        await asyncio.get_running_loop().run_in_executor(_closer(), session.close)


async def close_or_invalidate(session: Session | AsyncSession) -> None:
    """close_session(), or, when the close fails, the session's connections discarded.

    A close fails when the connection is still busy: a task or thread that kept the
    request's session runs a statement on it ("another operation is in progress"). The
    session would then keep that connection checked out until a garbage collection, and a
    full pool answers 503 meanwhile; discarded, the pool gets its slot back at once (and
    the statement still running on it fails, as work that outlives its request should).
    """
    held = _connections_of(session)  # a failed close forgets its transaction: noted first
    try:
        await close_session(session)
        return
    except Exception:
        logger.warning(
            "closing a request's session failed: its connection is discarded", exc_info=True
        )
    if isinstance(session, AsyncSession):
        # On the loop, outside SQLAlchemy's greenlet: the asyncpg adapter then terminates
        # the connection (closes its transport) instead of asking asyncpg for a graceful
        # close, which it refuses too while an operation is in progress.
        _invalidate(held)
    else:
        await asyncio.get_running_loop().run_in_executor(_closer(), _invalidate, held)


def close_or_invalidate_now(session: Session) -> None:
    """close_or_invalidate() for `with RequestScope():`, in the calling thread."""
    held = _connections_of(session)
    try:
        session.close()
    except Exception:
        logger.warning(
            "closing a request's session failed: its connection is discarded", exc_info=True
        )
        _invalidate(held)


def _invalidate(connections: list[Connection]) -> None:
    # Connection.invalidate() discards the DBAPI connection and checks its pool slot in.
    for connection in connections:
        try:
            if not connection.closed and not connection.invalidated:
                connection.invalidate()
        except Exception:
            logger.warning("discarding a request session's connection failed", exc_info=True)


def _connections_of(session: Session | AsyncSession) -> list[Connection]:
    # The connection the session's transaction holds (each of the layer's sessions has one
    # bind): Session.connection() hands back the one already checked out, with no I/O.
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    if not sync.in_transaction():
        return []
    try:
        return [sync.connection()]
    except Exception:  # a session another task is using mid-operation: nothing to note
        return []


def closed_without_io(session: Session | AsyncSession) -> bool:
    """Close `session` now if that needs no round trip (no transaction); else False."""
    if session.in_transaction():
        return False
    try:
        (session.sync_session if isinstance(session, AsyncSession) else session).close()
    except Exception:
        logger.warning("closing a request's session failed", exc_info=True)
    return True


@cache
def _closer() -> ThreadPoolExecutor:
    # Made on first use, so importing this module starts no thread.
    return ThreadPoolExecutor(CLOSE_THREADS, thread_name_prefix="backend-session-close")
