"""`get_session()`, `engine`, `session_maker` and their async twins: the plain surface.

`get_session` resolves from the request's app container where the layer is installed, else
from the default container (backend/db/deps.py, where every request-time dependency lives);
the module-level names always from the default container: a `Container()` made on first use,
which `create_app()` and `install()` adopt when they are not given one. So
`Depends(get_session)`, `SessionDep` and `backend.db.session.engine` share one set of pools and
one set of overrides. Importing this module reads no variable and opens no connection;
`DATABASE_URL` is read when the first engine is built (backend/settings/).
"""

from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db.deps import default_container, get_async_session, get_session

__all__ = [
    "async_engine",
    "async_session_maker",
    "engine",
    "get_async_engine",
    "get_async_session",
    "get_async_session_maker",
    "get_engine",
    "get_session",
    "get_session_maker",
    "session_maker",
]


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
