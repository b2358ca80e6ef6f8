"""Request scope: one session per kind for everything a request does, closed once after it.

Why a scope of our own, and why an ASGI middleware carries it:
- dependency-injector's `Closing` ends a resource when the *function* that declared it returns,
  so a sub-dependency, a service or a streaming body got another session, or a closed one
  (issue 8); a `ContextLocalResource` has no notion of "the request".
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
- admission: a request that may use a sync session is admitted on the event loop, before
  its first threadpool call, and no more are admitted than the threadpool has workers; so
  the requests waiting for a connection can never hold every worker;
- the close of a sync session (a ROLLBACK round trip) runs on a small executor of its own,
  neither on the event loop nor in FastAPI's threadpool.
"""

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar, Token
from functools import cache
from types import TracebackType
from typing import Any, Self, TypeVar
from weakref import WeakKeyDictionary

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

S = TypeVar("S", Session, AsyncSession)

# Every session the layer makes, in one place:
# - expire_on_commit=False: a route that commits and returns the ORM object serialises it
#   without reloading it (an AsyncSession could not lazy-load an expired attribute at all);
# - close_resets_only=False: a session used after its request ended raises instead of
#   silently opening a new connection that nothing returns (SQLAlchemy 2.0.22+).
SESSION_OPTIONS: dict[str, Any] = {"expire_on_commit": False, "close_resets_only": False}

# A close waits for at most one round trip and never for a connection, so any bound avoids
# the deadlock; this one drains closes faster than a pool of Neon's recommended size fills.
CLOSE_THREADS = 16


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
        # The app's container, so that what a request asks for comes from its own app's
        # providers, whatever container dependency-injector's process-wide wiring points at.
        self.container = container
        self._sessions: dict[Callable[[], Any], Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._token: Token[RequestScope | None] | None = None
        self._gate = gate
        self._admitted = False

    async def admit(self) -> None:
        """Wait, on the event loop, until this request may use a sync session (once)."""
        if self._gate is None or self._admitted:
            return
        await self._gate.acquire()
        if self._admitted:  # two tasks of one request got here at once: keep one place
            self._gate.release()
        self._admitted = True

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
                session.close()
        if any(isinstance(session, AsyncSession) for session in sessions):
            raise RuntimeError("an AsyncSession was opened: use `async with RequestScope()`")

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end()
        try:
            for session in self._take_sessions():
                try:
                    await close_session(session)
                except Exception:
                    # The response is already sent; one failed close must not skip the others.
                    logger.warning("closing a request's session failed", exc_info=True)
        finally:
            if self._admitted and self._gate is not None:
                self._gate.release()  # its connection is back in the pool

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


def request_async_session(maker: Callable[[], S]) -> S:
    """The same for an async maker; a function of its own so a marker can tell them apart."""
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


@cache
def _closer() -> ThreadPoolExecutor:
    # Made on first use, so importing this module starts no thread.
    return ThreadPoolExecutor(CLOSE_THREADS, thread_name_prefix="backend-session-close")


class RequestScopeMiddleware:
    """Opens a RequestScope around each HTTP request or WebSocket connection.

    A plain ASGI middleware, not BaseHTTPMiddleware: the app runs in this coroutine's own
    context, so the scope set here is the one every dependency, thread and task inherits.
    """

    def __init__(self, app: ASGIApp, container: Any = None) -> None:
        self.app = app
        # The app's container, chosen when the layer was installed; None: `app.state`'s.
        self.container = container
        # One admission gate per event loop (a TestClient runs each `with` in a new loop).
        self._gates: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            WeakKeyDictionary()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        container = self.container or getattr(scope["app"].state, "container", None)
        async with RequestScope(self._gate(), container):
            await self.app(scope, receive, send)

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            # As many as FastAPI's threadpool has workers (anyio's default limiter, 40).
            workers = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
            gate = self._gates[loop] = asyncio.Semaphore(workers)
        return gate
