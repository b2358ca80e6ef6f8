"""`install(app)`: the layer added to a FastAPI app; `create_app()`: a new app with it.

Either way the container is chosen when the app is made, wired and checked when it starts,
and the engines it built are disposed when it stops."""

import importlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import ModuleType
from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy import Engine, QueuePool
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.api import health as health_route
from backend.api.errors import handle_database_errors
from backend.db import container as containers
from backend.db.connection.plan import ConnectionPlan
from backend.db.container import Container, EngineHook
from backend.db.deps import default_container, use_container
from backend.db.engines.pool import pool_sizes
from backend.middleware import RequestScopeMiddleware
from backend.settings import ConfigurationError, NoDirectEndpoint
from backend.wiring import check_wiring, resolve_markers_on_the_loop

logger = logging.getLogger("backend")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


def install(
    app: FastAPI,
    container: Container | None = None,
    *,
    wire: Sequence[str | ModuleType] = (),
    health: bool = True,
    on_engine: EngineHook | None = None,
) -> Container:
    """Add the layer to `app`, an app of your own: the request scope (one session per
    request, closed after the response), the database error answers, `GET /health/db` (unless
    `health=False`), and a lifespan around the app's own (its `lifespan=`, or its startup and
    shutdown handlers) that checks the settings, wires `wire` (modules or packages, objects or
    dotted names) to the container, and disposes the engines it built at shutdown.

    `on_engine(engine, role)` is called for every engine the container builds (see
    backend.db.container.on_engine): `on_engine=backend.telemetry.instrument` traces them.

    Without a container, the default one (backend/db/deps.py) is the app's. The one used
    is returned, and kept as `app.state.container`: where tests bind their database.
    """
    if getattr(app.state, "container", None) is not None:
        raise RuntimeError(
            "the layer is already installed on this app (create_app() installs it): "
            "call install() once per app"
        )
    active = container if container is not None else default_container()
    app.state.container = active
    if on_engine is not None:
        containers.on_engine(active, on_engine)
    # Outside the exception handlers: a 503 is answered before the request's sessions close.
    app.add_middleware(RequestScopeMiddleware, container=active)
    handle_database_errors(app)
    if health:
        app.include_router(health_route.router)
    apps_own = app.router.lifespan_context

    def start() -> None:
        # First: backend.db.session's module-level names resolve from the running app's.
        use_container(active)
        engine = _checked(active)
        modules = [importlib.import_module(m) if isinstance(m, str) else m for m in wire]
        active.wire(
            modules=[m for m in modules if not hasattr(m, "__path__")],
            packages=[m for m in modules if hasattr(m, "__path__")],
        )
        resolve_markers_on_the_loop(app)
        check_wiring(app, active)
        say_which_database(active, engine)
        say_which_replicas(active)

    start_once = StartOnce(start)
    app.add_middleware(StartAtFirstRequest, start=start_once)  # outermost

    @asynccontextmanager
    async def lifespan_of_the_layer(app: FastAPI) -> AsyncIterator[Any]:
        start_once.now()
        try:
            async with apps_own(app) as state:
                yield state
        finally:
            # Not unwired: an app started again (a second TestClient) must find its routes
            # wired. Only what was built is disposed: nothing is built to be disposed.
            for built in active.built_engines():
                disposed = built.dispose()  # an AsyncEngine gives a coroutine
                if disposed is not None:
                    await disposed
            start_once.done = False

    app.router.lifespan_context = lifespan_of_the_layer
    return active


class StartOnce:
    """The layer's start (settings checked, modules wired, the startup line), run once per
    run of the app: by its lifespan, or at its first request where no lifespan ran."""

    def __init__(self, start: Callable[[], None]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self.done = False

    def now(self) -> None:
        with self._lock:
            if not self.done:
                self._start()
                self.done = True


class StartAtFirstRequest:
    """Start the layer at the first request of an app whose lifespan never ran.

    Starlette runs the lifespan of the app it serves, not of an app mounted under it
    (`outer.mount("/v2", app)`); a TestClient used outside `with`, httpx's ASGITransport and
    `--lifespan off` run none. The request scope needs nothing from the lifespan, but the
    settings check, the wiring and the markers' move to the event loop happen at start: done
    here, once, they serve these apps as they serve a started one. Only the disposal of the
    engines at shutdown is left undone, so the log says so once.
    """

    def __init__(self, app: ASGIApp, start: StartOnce) -> None:
        self.app, self.start = app, start

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.start.done and scope["type"] in ("http", "websocket"):
            self.start.now()
            mounted = scope.get("root_path", "")
            logger.warning(
                "the app%s started without its lifespan (a mounted app, a TestClient outside "
                "`with`, or --lifespan off): the database layer started at its first request, "
                "and its engines are not disposed at shutdown%s",
                f" mounted at {mounted}" if mounted else "",
                "; run the mounted app's lifespan from the outer app's" if mounted else "",
            )
        await self.app(scope, receive, send)


def create_app(
    container: Container | None = None,
    *,
    routers: Iterable[APIRouter] = (),
    wire: Sequence[str | ModuleType] = (),
    lifespan: Lifespan | None = None,
    on_engine: EngineHook | None = None,
    **fastapi_options: Any,
) -> FastAPI:
    """A new app with the layer installed: `FastAPI(lifespan=lifespan, **fastapi_options)`,
    `routers` included, then `install(app, container, wire=wire, on_engine=on_engine)`. Your
    `lifespan` runs inside the layer's: the container is ready when it starts, and engines are
    disposed after it."""
    app = FastAPI(lifespan=lifespan, **{"title": "backend", **fastapi_options})
    install(app, container, wire=wire, on_engine=on_engine)
    for router in routers:
        app.include_router(router)
    return app


def _checked(active: Container) -> Engine:
    """The app's write engine, every setting checked (a bad one stops startup here), the pool
    built; SQLAlchemy connects on first use, so the app starts even while the database is
    unreachable."""
    try:
        probed = active.probed_engine()
        engine: Engine = probed.sync_engine if isinstance(probed, AsyncEngine) else probed
        if not active.engine.overridden and not active.async_engine.overridden:
            # The plan applies the async path's rules too, not at its first request (building
            # the write engine built it: this is the same plan).
            active.connection_plan()
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
        plan = container.connection_plan()
        where, settings = _kind_of(plan), plan.settings
        # The sync engine's driver is in its URL's scheme; the async one's is a setting.
        where += f", async engine on {plan.async_driver_name}"
        sizes = f"pool {settings.pool_size} + {settings.max_overflow} overflow per engine"
        if (read := pool_sizes(settings, read_only=True)) != pool_sizes(settings, False):
            sizes += f" ({read[0]} + {read[1]} for the read engines)"
    except ConfigurationError:  # an engine handed in by a test, without settings
        where = "an engine given to the container"
        sizes = f"pool {pool.size()}" if isinstance(pool, QueuePool) else type(pool).__name__
    else:
        sizes += _direct_endpoint(container, plan)
    logger.info(
        "database %s, %s, sslmode=%s, %s",
        engine.url.render_as_string(hide_password=True), where,
        engine.url.query.get("sslmode", "default"), sizes,
    )  # fmt: skip


def _direct_endpoint(container: Container, primary: ConnectionPlan) -> str:
    """The startup line's word on the direct endpoint, where it is not DATABASE_URL's host.
    Its plan is built here, so that a direct URL the rules refuse stops the app at startup;
    one that is unknown stops only what needs it (the direct engine)."""
    try:
        direct = container.direct_plan()
    except NoDirectEndpoint:
        return "; no direct endpoint known (migrations need DATABASE_DIRECT_URL)"
    if direct is primary:
        return ""
    hosts = ",".join(f"{e.connects_to}:{e.port}" for e in direct.target.endpoints)
    return f"; direct endpoint {hosts} {direct.came_from}"


def say_which_replicas(container: Container) -> None:
    """A line per read replica (DATABASE_READ_URL), after building its engine: a replica URL
    the rules refuse stops the app at startup, as DATABASE_URL's does."""
    if container.engine.overridden or container.async_engine.overridden:
        return  # an engine given to the container has no replicas
    settings = container.settings()
    for plan, engine in zip(container.replica_plans(), container.replica_engines(), strict=True):
        logger.info(
            "read replica %s, %s, sslmode=%s; max lag %s, without a replica: %s",
            engine.url.render_as_string(hide_password=True),
            _kind_of(plan),
            plan.sslmode,
            f"{settings.read_max_lag:g} s" if settings.read_max_lag else "unbounded",
            "read from the primary" if settings.read_fallback == "primary" else "503",
        )


def _kind_of(plan: ConnectionPlan) -> str:
    return "pooler (PgBouncer, transaction mode)" if plan.is_pooler else "direct"


def _give_the_log_an_output() -> None:
    # Logging is the application's to configure; where it is not configured at all (plain
    # uvicorn configures only its own loggers), the layer's lines would vanish below WARNING.
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
