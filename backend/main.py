"""`create_app()`: your routers on the layer, its container built and wired at start, engines
disposed at stop."""

import importlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import ModuleType
from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy import Engine, QueuePool

from backend import api
from backend.api import health
from backend.api.errors import handle_database_errors
from backend.container import Container
from backend.db.budget import pool_sizes
from backend.db.rules import check_rules
from backend.db.scope import RequestScopeMiddleware
from backend.db.session import default_container, use_container
from backend.db.url import is_pooler
from backend.settings import ConfigurationError
from backend.wiring import check_wiring

logger = logging.getLogger("backend")

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
        # First: what resolves from "the app's container" (and the test toolkit, which binds
        # the test database here) must see this one before anything in it is built.
        use_container(active)
        engine = _checked(active)
        modules = [importlib.import_module(m) if isinstance(m, str) else m for m in wire]
        active.wire(
            modules=[m for m in modules if not hasattr(m, "__path__")],
            packages=[api, *(m for m in modules if hasattr(m, "__path__"))],
        )
        check_wiring(app, active)
        app.state.container = active
        say_which_database(active, engine)
        say_which_replicas(active)
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            # Not unwired: an app started again (a second TestClient) must find its routes
            # wired. Only what was built is disposed: nothing is built to be disposed.
            for built in active.built_engines():
                disposed = built.dispose()  # an AsyncEngine gives a coroutine
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


def _checked(active: Container) -> Engine:
    """The app's write engine, every setting checked (a bad one stops startup here), the pool
    built; SQLAlchemy connects on first use, so the app starts even while the database is
    unreachable."""
    try:
        engine = active.engine()
        if not active.engine.overridden and not active.async_engine.overridden:
            check_rules(active.settings())  # the async path's too, not at its first request
    except ConfigurationError as error:
        # uvicorn prints the lifespan's traceback: raised afresh, the setting's sentence is its
        # last line after a few frames, not after dependency-injector's thirty.
        raise ConfigurationError(str(error)) from None
    return engine


def say_which_database(container: Container, engine: Engine) -> None:
    """One line at startup, in every run mode: which database, direct or pooler, TLS, pools."""
    _give_the_log_an_output()
    pool = engine.pool
    try:
        settings = container.settings()
        where = "pooler (PgBouncer, transaction mode)" if is_pooler(settings) else "direct"
        sizes = f"pool {settings.pool_size} + {settings.max_overflow} overflow per engine"
        if (read := pool_sizes(settings, read_only=True)) != pool_sizes(settings, False):
            sizes += f" ({read[0]} + {read[1]} for the read engines)"
    except ConfigurationError:  # an engine handed in by a test, without settings
        where = "an engine given to the container"
        sizes = f"pool {pool.size()}" if isinstance(pool, QueuePool) else type(pool).__name__
    logger.info(
        "database %s, %s, sslmode=%s, %s",
        engine.url.render_as_string(hide_password=True), where,
        engine.url.query.get("sslmode", "default"), sizes,
    )  # fmt: skip


def say_which_replicas(container: Container) -> None:
    """A line per read replica (DATABASE_READ_URL), after building its engine: a replica URL
    the rules refuse stops the app at startup, as DATABASE_URL's does."""
    try:
        settings = container.settings()
    except ConfigurationError:  # an engine given to the container, without settings
        return
    for replica, engine in zip(settings.replicas, container.replica_engines(), strict=True):
        logger.info(
            "read replica %s, %s, sslmode=%s; max lag %s, without a replica: %s",
            engine.url.render_as_string(hide_password=True),
            "pooler (PgBouncer, transaction mode)" if is_pooler(replica) else "direct",
            engine.url.query.get("sslmode", "default"),
            f"{settings.read_max_lag:g} s" if settings.read_max_lag else "unbounded",
            "read from the primary" if settings.read_fallback == "primary" else "503",
        )


def _give_the_log_an_output() -> None:
    # Logging is the application's to configure; where it is not configured at all (plain
    # uvicorn configures only its own loggers), the layer's lines would vanish below WARNING.
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


app = create_app()
