"""The FastAPI application: container built and wired at start, engines disposed at stop."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dependency_injector.providers import Provider
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import api
from backend.api import health
from backend.api.errors import handle_database_errors
from backend.container import Container
from backend.db.scope import RequestScopeMiddleware
from backend.settings import ConfigurationError


def create_app(container: Container | None = None) -> FastAPI:
    """The app; without a container, one is made when the app starts, from that environment."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        active = container if container is not None else Container()
        active.wire(packages=[api])
        app.state.container = active
        # Validates the settings (a bad one stops startup here) and builds the pool; SQLAlchemy
        # connects on first use, so the app starts even while the database is unreachable.
        engine = active.engine()
        try:
            yield
        finally:
            # Not unwired: wiring is how routes reach the container, including modules the user
            # wired, and an app started again (a second TestClient) must find them wired.
            engine.dispose()
            for lazy in (active.async_engine, active.read_engine, active.async_read_engine):
                await dispose_if_built(lazy)

    app = FastAPI(title="backend", lifespan=lifespan)
    # Outside the exception handlers: a 503 is answered before the request's sessions close.
    app.add_middleware(RequestScopeMiddleware)
    handle_database_errors(app)
    app.include_router(health.router)
    return app


async def dispose_if_built(engine_provider: Provider[Engine] | Provider[AsyncEngine]) -> None:
    # The async and read engines are built on first use, so that an app (or a test that
    # overrides only `engine`) that never uses them needs nothing for them. Getting one here
    # opens no connection.
    try:
        engine = engine_provider()
    except ConfigurationError:
        return  # it could not have been built before either: nothing to dispose
    disposed = engine.dispose()
    if disposed is not None:
        await disposed


app = create_app()
