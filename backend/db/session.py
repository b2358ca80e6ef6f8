"""Sessions: the per-request resources the container provides, and the same surface without it.

`engine`, `session_maker`, `get_session()`, their async twins (`async_engine`,
`async_session_maker`, `get_async_session()`) and `database_url()` come from a default
`Container` made on first use, so importing this module reads no variable and opens no
connection.
"""

from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

if TYPE_CHECKING:
    from backend.container import Container


def session_resource(engine: Engine, session_class: type[Session] = Session) -> Iterator[Session]:
    """One session, closed when its scope ends; close() rolls back whatever was not committed.

    No commit after the yield: dependency-injector's Closing resumes this generator normally
    even when the route raised, so such a commit would keep a failed request's writes.
    Objects are not expired on commit: the route's response is serialised after Closing has
    closed the session, and an expired object would then fail to load (DetachedInstanceError).
    """
    with session_class(engine, expire_on_commit=False) as session:
        yield session


async def async_session_resource(
    engine: AsyncEngine, sync_session_class: type[Session] = Session
) -> AsyncIterator[AsyncSession]:
    """The async twin of session_resource, for the same reasons.

    SQLModel's AsyncSession: SQLAlchemy's, plus the typed `exec(select(...))` that SQLModel
    users write on the sync path too. expire_on_commit=False matters doubly here: an async
    session cannot lazy-load an expired attribute at all.
    """
    async with AsyncSession(
        engine, expire_on_commit=False, sync_session_class=sync_session_class
    ) as session:
        yield session


@cache
def default_container() -> "Container":
    # Imported here, not at the top: backend.container imports this module for session_resource.
    from backend.container import Container

    return Container()


def database_url() -> URL:
    """DATABASE_URL as the engine uses it (its repr hides the password)."""
    return default_container().engine().url


def get_engine() -> Engine:
    return default_container().engine()


def get_session_maker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), class_=Session, expire_on_commit=False)


def get_async_engine() -> AsyncEngine:
    return default_container().async_engine()


def get_async_session_maker() -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(get_async_engine(), class_=AsyncSession, expire_on_commit=False)


def get_session() -> Iterator[Session]:
    """A plain FastAPI dependency, `Depends(get_session)`, for code without the container."""
    yield from session_resource(get_engine())


async def get_async_session() -> AsyncIterator[AsyncSession]:
    """`Depends(get_async_session)`, the async twin of get_session."""
    # Not `async for … in async_session_resource(…)`: closing this generator would leave that
    # one suspended, its session open until the garbage collector finds it.
    async with AsyncSession(get_async_engine(), expire_on_commit=False) as session:
        yield session


_LAZY = {
    "engine": get_engine,
    "session_maker": get_session_maker,
    "async_engine": get_async_engine,
    "async_session_maker": get_async_session_maker,
}


def __getattr__(name: str) -> object:
    # PEP 562: `from backend.db.session import engine` builds it on first use, not at import.
    if name in _LAZY:
        return _LAZY[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
