"""The dependency-injection container: config → settings → engines → session makers → sessions."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

import yaml
from dependency_injector import containers, providers
from dependency_injector.wiring import Provide
from fastapi import Depends
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db.engine import create_async_db_engine, create_sync_engine
from backend.db.readonly import ReadOnlySession
from backend.db.scope import (
    admit_sync_session,
    make_async_session_maker,
    make_session_maker,
    request_async_session,
    request_session,
)
from backend.settings import ConfigurationError, load_settings

CONFIG_FILE = Path(__file__).resolve().parent.parent / "config.yml"


class Container(containers.DeclarativeContainer):
    # Read when a Container() is made, with the environment of that moment.
    config = providers.Configuration(yaml_files=[CONFIG_FILE])
    settings = providers.ThreadSafeSingleton(load_settings, config.database)
    # Singletons, built on first use; thread-safe, since sync routes run in a threadpool.
    engine = providers.ThreadSafeSingleton(create_sync_engine, settings)
    async_engine = providers.ThreadSafeSingleton(create_async_db_engine, settings)
    # Reads that need no transaction: autocommit (one round trip for a one-query read) and
    # writes refused. Own engines, so that a read replica's URL can take their place.
    read_engine = providers.ThreadSafeSingleton(create_sync_engine, settings, read_only=True)
    async_read_engine = providers.ThreadSafeSingleton(
        create_async_db_engine, settings, read_only=True
    )

    session_maker = providers.ThreadSafeSingleton(make_session_maker, engine)
    async_session_maker = providers.ThreadSafeSingleton(make_async_session_maker, async_engine)
    read_session_maker = providers.ThreadSafeSingleton(
        make_session_maker, read_engine, session_class=ReadOnlySession
    )
    async_read_session_maker = providers.ThreadSafeSingleton(
        make_async_session_maker, async_read_engine, sync_session_class=ReadOnlySession
    )

    # The request's own session of each kind: made on first use, the same object for the
    # route, its dependencies, the services built on it and the response body, and closed
    # once after the response (backend/db/scope.py). Factories, not Resources: nothing for
    # dependency-injector to shut down, so Closing has nothing to close early.
    session = providers.Factory(request_session, session_maker)
    async_session = providers.Factory(request_async_session, async_session_maker)
    read_session = providers.Factory(request_session, read_session_maker)
    async_read_session = providers.Factory(request_async_session, async_read_session_maker)

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
    ProvideOnLoop = Provide
else:

    class ProvideOnLoop(Provide):
        """Provide, called by FastAPI on the event loop rather than in its threadpool.

        FastAPI calls a dependency to get its value, and a marker's value is the marker itself
        (which @inject then replaces); a sync __call__ costs a threadpool round trip per
        request for nothing. Being on the loop, before the function that gets the value runs
        in the threadpool, is also where a request is admitted to sync sessions
        (backend/db/scope.py says why).
        """

        _uses_sync_session: bool | None = None

        async def __call__(self) -> Self:
            if self._uses_sync_session is None:
                self._uses_sync_session = _reaches_sync_session(self.provider)
            if self._uses_sync_session:
                await admit_sync_session()
            return self

    def _reaches_sync_session(provider: Any) -> bool:
        candidates = [provider, *getattr(provider, "traverse", list)()]
        return any(getattr(p, "provides", None) is request_session for p in candidates)


# The route idioms, with @inject: the request's session of that kind.
SessionDep = Annotated[Session, Depends(ProvideOnLoop[Container.session])]
AsyncSessionDep = Annotated[AsyncSession, Depends(ProvideOnLoop[Container.async_session])]
ReadSessionDep = Annotated[Session, Depends(ProvideOnLoop[Container.read_session])]
AsyncReadSessionDep = Annotated[AsyncSession, Depends(ProvideOnLoop[Container.async_read_session])]
