"""`create_app()`: your routers on the layer, its container built and wired at start, engines
disposed at stop."""

import importlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import ModuleType
from typing import Any

from fastapi import APIRouter, FastAPI

from backend import api
from backend.api import health
from backend.api.errors import handle_database_errors
from backend.container import Container
from backend.db.scope import RequestScopeMiddleware
from backend.db.session import default_container, use_container
from backend.wiring import check_wiring

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


def create_app(
    container: Container | None = None,
    *,
    routers: Iterable[APIRouter] = (),
    wire: Sequence[str | ModuleType] = (),
    lifespan: Lifespan | None = None,
    **fastapi_options: Any,
) -> FastAPI:
    """The app: `routers` included, `wire` (modules or packages, objects or dotted names)
    wired to the container when the app starts, `lifespan` run inside ours (the container is
    ready and `app.state.container` set when it starts; engines are disposed after it ends).

    Without a container, the one `backend.db.session` resolves from is used, made when the
    app starts from that moment's environment.
    """

    @asynccontextmanager
    async def lifespan_of_the_layer(app: FastAPI) -> AsyncIterator[Any]:
        active = container if container is not None else default_container()
        use_container(active)
        modules = [importlib.import_module(m) if isinstance(m, str) else m for m in wire]
        active.wire(
            modules=[m for m in modules if not hasattr(m, "__path__")],
            packages=[api, *(m for m in modules if hasattr(m, "__path__"))],
        )
        check_wiring(app, active)
        app.state.container = active
        # Validates the settings (a bad one stops startup here) and builds the pool; SQLAlchemy
        # connects on first use, so the app starts even while the database is unreachable.
        active.engine()
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            # Not unwired: an app started again (a second TestClient) must find its routes
            # wired. Only what was built is disposed: nothing is built to be disposed.
            for engine in active.built_engines():
                disposed = engine.dispose()  # an AsyncEngine gives a coroutine
                if disposed is not None:
                    await disposed

    app = FastAPI(lifespan=lifespan_of_the_layer, **{"title": "backend", **fastapi_options})
    # Outside the exception handlers: a 503 is answered before the request's sessions close.
    app.add_middleware(RequestScopeMiddleware)
    handle_database_errors(app)
    app.include_router(health.router)
    for router in routers:
        app.include_router(router)
    return app


app = create_app()
