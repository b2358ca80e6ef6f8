"""The dependency-injection container: config → settings → engines → per-request sessions."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

import yaml
from dependency_injector import containers, providers
from dependency_injector.wiring import Closing, Provide
from fastapi import Depends
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.compat import fix_closing_on_python_311
from backend.db.engine import create_async_db_engine, create_sync_engine
from backend.db.readonly import ReadOnlySession
from backend.db.session import async_session_resource, session_resource
from backend.settings import ConfigurationError, load_settings

CONFIG_FILE = Path(__file__).resolve().parent.parent / "config.yml"

fix_closing_on_python_311()


class Container(containers.DeclarativeContainer):
    # Read when a Container() is made, with the environment of that moment.
    config = providers.Configuration(yaml_files=[CONFIG_FILE])
    settings = providers.ThreadSafeSingleton(load_settings, config.database)
    # Singletons, not Resources: Closing shuts down every Resource it reaches, and would
    # dispose an engine after each request. Thread-safe: sync routes run in a threadpool.
    engine = providers.ThreadSafeSingleton(create_sync_engine, settings)
    async_engine = providers.ThreadSafeSingleton(create_async_db_engine, settings)
    # Per request: their state lives in a ContextVar, and each request runs in its own context.
    # Never initialise them outside a request (e.g. a blanket init_resources()): every request
    # would then share that one session.
    session = providers.ContextLocalResource(session_resource, engine=engine)
    async_session = providers.ContextLocalResource(async_session_resource, engine=async_engine)
    # Reads that need no transaction: one round trip for a one-query read, writes refused. Own
    # engines, so that a read replica's URL can take their place.
    read_engine = providers.ThreadSafeSingleton(create_sync_engine, settings, read_only=True)
    async_read_engine = providers.ThreadSafeSingleton(
        create_async_db_engine, settings, read_only=True
    )
    read_session = providers.ContextLocalResource(
        session_resource, engine=read_engine, session_class=ReadOnlySession
    )
    async_read_session = providers.ContextLocalResource(
        async_session_resource, engine=async_read_engine, sync_session_class=ReadOnlySession
    )

    def __new__(cls, **overriding_providers: Any) -> "Container":
        # ${VAR} is pasted into the YAML text before parsing, so a value that breaks YAML makes
        # PyYAML quote the offending line, DATABASE_URL's password included.
        try:
            return super().__new__(cls, **overriding_providers)
        except yaml.YAMLError:
            raise ConfigurationError(
                f"{CONFIG_FILE.name} is not valid YAML once the DATABASE_* variables are "
                "substituted: a value holds a character YAML cannot take there (in "
                "DATABASE_URL, percent-encode the password, e.g. ' as %27)"
            ) from None


if TYPE_CHECKING:
    ClosingOnLoop = Closing
else:

    class ClosingOnLoop(Closing):
        """Closing, called by FastAPI on the event loop rather than in its threadpool.

        FastAPI calls a dependency to get its value, and a marker's value is the marker itself;
        a sync __call__ costs a threadpool round trip per request for nothing.
        """

        async def __call__(self) -> Self:
            return self


# The route idioms: the route gets its own session, closed when the route returns.
SessionDep = Annotated[Session, Depends(ClosingOnLoop[Provide[Container.session]])]
AsyncSessionDep = Annotated[AsyncSession, Depends(ClosingOnLoop[Provide[Container.async_session]])]
ReadSessionDep = Annotated[Session, Depends(ClosingOnLoop[Provide[Container.read_session]])]
AsyncReadSessionDep = Annotated[
    AsyncSession, Depends(ClosingOnLoop[Provide[Container.async_read_session]])
]
