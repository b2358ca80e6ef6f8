"""The seed's surface over the app's container: `get_session()`, `engine`, `session_maker`, twins.

Every name here resolves from one container: the app's (`create_app()` makes it the default
when the app starts), or, before any app has started, a default `Container()` made on first
use, which `create_app()` then adopts. So `Depends(get_session)`, `SessionDep` and
`backend.db.session.engine` share one set of pools and one set of overrides. Importing this
module reads no variable and opens no connection.
"""

from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.container import Container
from backend.db.scope import current_scope

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


def _request_container(request: Request) -> Container:
    scope = current_scope()
    container = getattr(scope, "container", None) or getattr(request.app.state, "container", None)
    return container or default_container()


async def get_session(request: Request) -> Session:
    """`session: Session = Depends(get_session)`: the request's session, as SessionDep."""
    scope = current_scope()
    if scope is not None:
        await scope.admit()
    session: Session = _request_container(request).session()
    return session


async def get_async_session(request: Request) -> AsyncSession:
    """`Depends(get_async_session)`: the request's AsyncSession, as AsyncSessionDep."""
    session: AsyncSession = _request_container(request).async_session()
    return session


def database_url() -> URL:
    """DATABASE_URL as the engine uses it (its repr hides the password)."""
    url: URL = get_engine().url
    return url


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
