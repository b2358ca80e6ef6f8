"""Sessions: the per-request resource the container provides, and the same surface without it.

`engine`, `session_maker`, `get_session()` and `database_url()` come from a default `Container`
made on first use, so importing this module reads no variable and opens no connection.
"""

from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

if TYPE_CHECKING:
    from backend.container import Container


def session_resource(engine: Engine) -> Iterator[Session]:
    """One session, closed when its scope ends; close() rolls back whatever was not committed.

    No commit after the yield: dependency-injector's Closing resumes this generator normally
    even when the route raised, so such a commit would keep a failed request's writes.
    Objects are not expired on commit: the route's response is serialised after Closing has
    closed the session, and an expired object would then fail to load (DetachedInstanceError).
    """
    with Session(engine, expire_on_commit=False) as session:
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


def get_session() -> Iterator[Session]:
    """A plain FastAPI dependency, `Depends(get_session)`, for code without the container."""
    yield from session_resource(get_engine())


def __getattr__(name: str) -> Engine | sessionmaker[Session]:
    # PEP 562: `from backend.db.session import engine` builds it on first use, not at import.
    if name == "engine":
        return get_engine()
    if name == "session_maker":
        return get_session_maker()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
