"""`get_session()`, `engine`, `session_maker` and their async twins: the plain surface.

`get_session` resolves from the request's app container where the layer is installed, else
from the default container; the module-level names always from the default container: a
`Container()` made on first use, which `create_app()` and `install()` adopt when they are not
given one. So `Depends(get_session)`, `SessionDep` and `backend.db.session.engine` share one
set of pools and one set of overrides. Importing this module reads no variable and opens no
connection.
"""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import HTTPConnection

from backend.container import Container
from backend.db.sessions.admission import acquire_admission, admission_gate
from backend.db.sessions.closing import close_or_invalidate
from backend.db.sessions.scope import RequestScope, current_scope

_default: list[Container] = []  # at most one: the container module-level names resolve from


def default_container() -> Container:
    if not _default:
        _default.append(Container())
    return _default[0]


def use_container(container: Container) -> None:
    """Make `container` the one `engine`, `session_maker`, … and `get_session` resolve from."""
    _default[:] = [container]


def forget_default_container() -> None:
    """The next use makes a new default Container(), from the environment of that moment."""
    _default.clear()


def _container_of(connection: HTTPConnection, scope: RequestScope | None) -> Container:
    container = getattr(scope, "container", None) or getattr(
        connection.app.state, "container", None
    )
    return container or default_container()


async def get_session(connection: HTTPConnection) -> AsyncIterator[Session]:
    """`session: Session = Depends(get_session)`: a session for this request, on any app.

    In an app with the layer installed it is the request's own session, as SessionDep's
    (shared with every other idiom, closed by the layer after the response). Elsewhere it is
    an ordinary FastAPI yield dependency: one session per request, shared by its
    sub-dependencies through FastAPI's per-request cache, and closed when FastAPI ends the
    dependency, rolling back whatever was not committed. Either way it needs no setup.
    """
    scope = current_scope()
    container = _container_of(connection, scope)
    if scope is not None:
        await scope.admit()
        yield container.session()
        return
    # Admitted as the layer's request sessions are (backend/db/sessions/scope.py): FastAPI still
    # needs its threadpool after a sync route, so unadmitted requests waiting for a
    # connection could hold every worker the requests holding connections need.
    gate = admission_gate()
    await acquire_admission(gate, container)
    try:
        session: Session = container.session_maker()()
        try:
            yield session
        finally:
            with anyio.CancelScope(shield=True):  # a deadline over the app must not skip it
                await close_or_invalidate(session)
    finally:
        gate.release()


async def get_async_session(connection: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """`Depends(get_async_session)`: get_session's AsyncSession twin."""
    scope = current_scope()
    container = _container_of(connection, scope)
    if scope is not None:
        yield container.async_session()
        return
    session: AsyncSession = container.async_session_maker()()
    try:
        yield session
    finally:
        with anyio.CancelScope(shield=True):  # a deadline over the app must not skip it
            await close_or_invalidate(session)


def get_engine() -> Engine:
    engine: Engine = default_container().engine()
    return engine


def get_session_maker() -> sessionmaker[Session]:
    maker: sessionmaker[Session] = default_container().session_maker()
    return maker


def get_async_engine() -> AsyncEngine:
    engine: AsyncEngine = default_container().async_engine()
    return engine


def get_async_session_maker() -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = default_container().async_session_maker()
    return maker


if TYPE_CHECKING:
    # What `from backend.db.session import engine` gives, for type checkers.
    engine: Engine
    session_maker: sessionmaker[Session]
    async_engine: AsyncEngine
    async_session_maker: async_sessionmaker[AsyncSession]

_LAZY = {
    "engine": get_engine,
    "session_maker": get_session_maker,
    "async_engine": get_async_engine,
    "async_session_maker": get_async_session_maker,
}


def __getattr__(name: str) -> object:
    # PEP 562: built on first use, not at import; the container's singletons build each once.
    if name in _LAZY:
        return _LAZY[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
