"""Request scope: one session per kind for everything a request does, closed once after it.

Why a scope of our own, and why an ASGI middleware carries it:
- dependency-injector's `Closing` ends a resource when the *function* that declared it returns,
  so a sub-dependency, a service or a streaming body would get another session, or a closed
  one; a `ContextLocalResource` has no notion of "the request".
- FastAPI's own per-request cache and `yield` teardown reach only `Depends(...)` callables,
  not services that providers build on `Container.session`.
- A middleware wraps the whole request: the route, every dependency, the response body and
  the background tasks (Starlette runs those inside the app call, after the body). The scope
  lives in a ContextVar, which asyncio tasks and FastAPI's threadpool copy, so every one of
  them finds the same scope object, and so the same sessions.

Closing happens after the response has been sent, so a rollback is off the latency path.

A sync session holds its connection until then, and after a sync route FastAPI still needs
its threadpool (it validates the response model there; a sync streaming body and sync
background tasks run there too). If every worker were a route waiting for a connection,
the requests holding the connections would wait for a worker forever: the tutorial
pattern's deadlock, measured here as 121 of 256 requests answered 503 after pool_timeout.
Two rules break that cycle:
- admission (backend/db/sessions/admission.py): a request that may use a sync session is admitted on
  the event loop, before its first threadpool call, and no more are admitted than the
  threadpool has workers; so the requests waiting for a connection can never hold every worker;
- the close of a sync session (a ROLLBACK round trip) runs on a small executor of its own,
  neither on the event loop nor in FastAPI's threadpool (backend/db/sessions/closing.py).
Admission is waited for no longer than the pool_timeout, and then answered 503 as a full pool
is. A WebSocket gives its place back once accepted: its handler runs on the event loop, where
a sync session neither holds a worker while it waits nor needs one to give its connection
back. Every idiom is admitted on the loop: the aliases' markers, `get_session`, and
dependency-injector's own `Provide[...]` markers, converted at startup by install() or at
the first request by this middleware when it was added by hand.

The close always completes: a cancellation of the request (a deadline over the app) does not
reach it, one failed close does not skip the others, and a session whose connection is still
busy (a task still running a statement on it) has that connection discarded, not leaked.
"""

import asyncio
import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db.sessions.admission import acquire_admission
from backend.db.sessions.closing import (
    close_or_invalidate,
    close_or_invalidate_now,
    closed_without_io,
)

logger = logging.getLogger(__name__)

S = TypeVar("S", Session, AsyncSession)

# Every session the layer makes, in one place:
# - expire_on_commit=False: a route that commits and returns the ORM object serialises it
#   without reloading it (an AsyncSession could not lazy-load an expired attribute at all);
# - close_resets_only=False: a session used after its request ended raises instead of
#   silently opening a new connection that nothing returns (SQLAlchemy 2.0.22+).
SESSION_OPTIONS: dict[str, Any] = {"expire_on_commit": False, "close_resets_only": False}


def make_session_maker(
    engine: Engine, session_class: type[Session] = Session
) -> sessionmaker[Session]:
    return sessionmaker(engine, class_=session_class, **SESSION_OPTIONS)


def make_async_session_maker(
    engine: AsyncEngine, sync_session_class: type[Session] = Session
) -> async_sessionmaker[AsyncSession]:
    # SQLModel's AsyncSession: SQLAlchemy's plus the typed `exec(select(...))`.
    return async_sessionmaker(
        engine, class_=AsyncSession, sync_session_class=sync_session_class, **SESSION_OPTIONS
    )


class OutsideRequestError(RuntimeError):
    """A request session was asked for where no request (or RequestScope) is running."""


class RequestScope:
    """The sessions of one request: each made on first use, all closed once, at exit.

    The middleware opens one per request. Code outside a request (a script, a worker, a test
    calling the container directly) can open its own: `with RequestScope(): ...` for sync
    sessions, `async with RequestScope(): ...` for either kind.
    """

    __slots__ = ("_admitted", "_closed", "_gate", "_lock", "_sessions", "_token", "container")

    def __init__(self, gate: asyncio.Semaphore | None = None, container: Any = None) -> None:
        # The container of the app serving the request: where every request-time dependency
        # (backend/db/deps.py) resolves from, whatever container dependency-injector's
        # process-wide wiring points at; and whose pool_timeout bounds the admission wait.
        self.container = container
        self._sessions: dict[Callable[[], Any], Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._token: Token[RequestScope | None] | None = None
        self._gate = gate
        self._admitted = False

    async def admit(self) -> None:
        """Wait, on the event loop, until this request may use a sync session (once).

        The wait is bounded as a pool checkout is, by the pool_timeout, and ends as a full
        pool does: AdmissionTimeout, a pool timeout, which the layer answers 503.
        """
        if self._gate is None or self._admitted or self._closed:
            return
        await acquire_admission(self._gate, self.container)
        if self._admitted:  # two tasks of one request got here at once: keep one place
            self._gate.release()
        self._admitted = True

    def leave(self) -> None:
        """Give this request's admission back (on the event loop): it needs no worker now."""
        if self._admitted and self._gate is not None:
            self._admitted = False
            self._gate.release()

    def session(self, maker: Callable[[], S]) -> S:
        """This scope's session from `maker`, made now if it is the first ask."""
        try:
            return self._sessions[maker]  # type: ignore[no-any-return]
        except KeyError:
            pass
        with self._lock:  # a request's sync dependencies and threads may ask at once
            if self._closed:
                raise OutsideRequestError(
                    "this request has ended and its session is closed: work that outlives "
                    "the request (a thread, a task) must open its own session"
                )
            return self._sessions.setdefault(maker, maker())  # type: ignore[no-any-return]

    def __enter__(self) -> Self:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._end()
        sessions = self._take_sessions()
        for session in sessions:
            if not isinstance(session, AsyncSession):
                close_or_invalidate_now(session)
        if any(isinstance(session, AsyncSession) for session in sessions):
            raise RuntimeError("an AsyncSession was opened: use `async with RequestScope()`")

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end()
        sessions = self._take_sessions()
        # Sessions with nothing to roll back close without I/O, so without an await.
        busy = [session for session in sessions if not closed_without_io(session)]
        if not busy:
            self.leave()
            return
        # A deadline over the app (a timeout middleware's anyio cancel scope, or a native
        # task.cancel()) would otherwise cut the close at its first await: the session would
        # keep its connection checked out, idle in transaction and holding its locks, until
        # a garbage collection. So the close runs in a task of its own that a cancellation
        # cannot reach, and this waits for it shielded from anyio's cancel scopes; a native
        # cancel still ends the wait, never the close.
        closing = asyncio.ensure_future(self._close_all(busy))
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)
        with anyio.CancelScope(shield=True):
            await asyncio.shield(closing)

    async def _close_all(self, sessions: list[Any]) -> None:
        try:
            for session in sessions:
                await close_or_invalidate(session)
        finally:
            self.leave()  # its connections are back in the pool, or discarded

    def _end(self) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    def _take_sessions(self) -> list[Any]:
        with self._lock:
            self._closed = True
            sessions, self._sessions = list(self._sessions.values()), {}
        return sessions


_current: ContextVar[RequestScope | None] = ContextVar("backend_request_scope", default=None)


def request_session(maker: Callable[[], S]) -> S:
    """The current request's session from `maker` (what `Container.session` provides)."""
    return _current_scope().session(maker)


def current_scope() -> RequestScope | None:
    return _current.get()


# What a request session asked for outside any scope says: the one call that fixes it.
NOT_INSTALLED = (
    "no request scope is running here: add `backend.install(app)` where your FastAPI app is "
    "made (or take `Depends(backend.get_session)`, which needs no setup); outside a request, "
    "open `with RequestScope():`"
)


def _current_scope() -> RequestScope:
    scope = _current.get()
    if scope is None:
        raise OutsideRequestError(NOT_INSTALLED)
    return scope


# The closes under way, each a task that a cancellation of its request does not reach: kept
# here so that nothing collects a task the request stopped waiting for.
_closing: set[asyncio.Future[None]] = set()
