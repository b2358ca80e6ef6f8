"""The seed's surface over the container: `get_session()`, `engine`, `session_maker`, and twins.

`get_session` / `get_async_session` are plain FastAPI dependencies (`Depends(get_session)`)
giving the request's session from the app's own container: the same object `SessionDep`
gives, closed after the response. `engine`, `session_maker`, their async twins and
`database_url()` come from a default `Container` made on first use, so importing this module
reads no variable and opens no connection.
"""

from functools import cache

from dependency_injector.containers import DynamicContainer
from fastapi import FastAPI, Request
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.container import Container
from backend.db.scope import admit_sync_session


def container_of(app: FastAPI) -> Container:
    container = getattr(app.state, "container", None)
    # Container() makes a DynamicContainer holding Container's providers: not an instance of it.
    if not isinstance(container, DynamicContainer):
        raise RuntimeError(
            "this app has no backend Container: make it with backend.main.create_app(), "
            "which starts one with the app"
        )
    return container  # type: ignore[return-value]


async def get_session(request: Request) -> Session:
    """`session: Session = Depends(get_session)`: the request's session, as SessionDep."""
    await admit_sync_session()
    session: Session = container_of(request.app).session()
    return session


async def get_async_session(request: Request) -> AsyncSession:
    """`Depends(get_async_session)`: the request's AsyncSession, as AsyncSessionDep."""
    session: AsyncSession = container_of(request.app).async_session()
    return session


@cache
def default_container() -> Container:
    return Container()


def database_url() -> URL:
    """DATABASE_URL as the engine uses it (its repr hides the password)."""
    return default_container().engine().url


def get_engine() -> Engine:
    return default_container().engine()


def get_session_maker() -> sessionmaker[Session]:
    return default_container().session_maker()


def get_async_engine() -> AsyncEngine:
    return default_container().async_engine()


def get_async_session_maker() -> async_sessionmaker[AsyncSession]:
    return default_container().async_session_maker()


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
