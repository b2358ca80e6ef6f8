"""The dependency-injection container: config → settings → engines → session makers → sessions."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from dependency_injector import containers, providers
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db.connection.plan import plan_connection, plan_direct, plan_replicas
from backend.db.engines.build import (
    create_async_db_engine,
    create_direct_engine,
    create_sync_engine,
)
from backend.db.engines.readonly import read_only_view
from backend.db.reads.replica_health import ReadReplicas
from backend.db.reads.replicas import ReplicaSet
from backend.db.reads.routing import (
    build_replica_engines,
    make_async_read_session_maker,
    make_read_session_maker,
)
from backend.db.sessions.scope import (
    make_async_session_maker,
    make_session_maker,
    request_session,
)
from backend.settings import (
    ConfigurationError,
    load_settings,
    read_config_file,
    with_env_file,
)

# The defaults ship inside the package; the repository's config.yml links here.
DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "config.yml"


E = TypeVar("E", Engine, AsyncEngine)
T = TypeVar("T")


# What an engine is for: the write engine, the read engine (read-only, its own pool), one per
# read replica (DATABASE_READ_URL), the direct one (migrations). Sync or async is its type.
EngineRole = Literal["write", "read", "replica", "direct"]
# Given every engine a container builds, once, with its role (on_engine).
EngineHook = Callable[[Engine | AsyncEngine, EngineRole], object]


class EngineHookError(RuntimeError):
    """An on_engine callback raised: the build that gave it the engine (startup, or a first
    use) stops with this one line."""


class EngineHooks(list[EngineHook]):
    """A container's on_engine callbacks: its own, kept when its singletons are reset (a
    test's use_database), so that the engines built afterwards are given to them too."""


class BuiltEngines(list[Engine | AsyncEngine]):
    """The engines a container has built, so that shutdown disposes those and builds none;
    each given to the container's on_engine callbacks as it is built."""

    def __init__(self, hooks: EngineHooks | None = None) -> None:
        super().__init__()
        self.hooks = EngineHooks() if hooks is None else hooks
        self.roles: list[EngineRole] = []

    def add(self, engine: E, role: EngineRole = "write") -> E:
        # Recorded first: an engine whose callback fails is still disposed at shutdown.
        self.append(engine)
        self.roles.append(role)
        for hook in list(self.hooks):
            _give(hook, engine, role)
        return engine

    def add_replica(self, engine: E) -> E:
        return self.add(engine, "replica")

    def on_each(self, hook: EngineHook) -> None:
        """`hook` for every engine built from now on, and now for each one built already."""
        self.hooks.append(hook)
        for engine, role in zip(list(self), list(self.roles), strict=True):
            _give(hook, engine, role)


def _give(hook: EngineHook, engine: Engine | AsyncEngine, role: EngineRole) -> None:
    try:
        hook(engine, role)
    except Exception as error:
        kind = "async " if isinstance(engine, AsyncEngine) else ""
        raise EngineHookError(
            f"the on_engine callback {getattr(hook, '__qualname__', repr(hook))} failed on the "
            f"{kind}{role} engine ({engine.url.render_as_string(hide_password=True)}): "
            f"{type(error).__name__}: {error}"
        ) from error


def _engine(
    factory: Callable[..., E],
    built: Any,
    plan: Any,
    role: EngineRole | None = None,
    **options: Any,
) -> providers.ThreadSafeSingleton[E]:
    """A singleton engine from `factory` and a connection plan, recorded in `built` when (and
    only if) it is built, as a `role` engine (by default, read or write as `read_only` says)."""
    role = role or ("read" if options.get("read_only") else "write")
    return providers.ThreadSafeSingleton(
        BuiltEngines.add, built, providers.Factory(factory, plan, **options), role
    )


def _followed(
    primary: providers.Provider[Any], derive: Callable[[Any], T], own: providers.Provider[T]
) -> providers.ThreadSafeSingleton[T]:
    """`own()`, built from the settings; or, while `primary` is overridden, `derive(primary())`.

    An engine given to the container (a test's, an app's own) is the whole database: what
    would otherwise come from DATABASE_URL follows it, so nothing asks for that variable.
    """
    return providers.ThreadSafeSingleton(
        _own_or_derived, primary.provider, providers.Object(derive), own.provider
    )


def _own_or_derived(
    primary: providers.Provider[Any], derive: Callable[[Any], Any], own: Callable[[], Any]
) -> Any:
    return derive(primary()) if primary.overridden else own()


def _no_replicas(_: object) -> tuple[()]:
    return ()


def _the_same(engine: T) -> T:
    return engine


class RequestSession(providers.Factory[Any]):
    """Provides the request's own Session (backend/db/sessions/scope.py).

    A provider class of its own so that a dependency can tell, from a provider or from
    anything built on it, that resolving it takes a request's admission to sync sessions."""


class AsyncRequestSession(providers.Factory[Any]):
    """Provides the request's own AsyncSession: no admission, it waits on the event loop."""


def _replicas_unless_given_an_engine(
    engine: providers.Provider[Any],
    async_engine: providers.Provider[Any],
    of_settings: Callable[[], ReplicaSet],
) -> ReplicaSet:
    given = engine.overridden or async_engine.overridden
    return ReplicaSet.none() if given else of_settings()


class Container(containers.DeclarativeContainer):
    # config.yml is read when a Container() is made (below); the variables its placeholders
    # name, when the settings are first built (the first engine).
    config = providers.Configuration()
    settings = providers.ThreadSafeSingleton(load_settings, config.database)
    # The connection rules applied once per settings (backend/db/connection/plan.py): the
    # engines are built from these plans, and the startup check reads them.
    connection_plan = providers.ThreadSafeSingleton(plan_connection, settings)
    replica_plans = providers.ThreadSafeSingleton(plan_replicas, settings)
    built_engines = providers.Singleton(BuiltEngines)
    # Singletons, built on first use; thread-safe, since sync routes run in a threadpool.
    engine = _engine(create_sync_engine, built_engines, connection_plan)
    async_engine = _engine(create_async_db_engine, built_engines, connection_plan)
    # Reads that need no transaction: autocommit (one round trip for a one-query read) and
    # writes refused. Own engines, so that a read replica's URL can take their place; on an
    # overriding engine, a read-only view of it.
    read_engine = _followed(
        engine,
        read_only_view,
        _engine(create_sync_engine, built_engines, connection_plan, read_only=True),
    )
    async_read_engine = _followed(
        async_engine,
        read_only_view,
        _engine(create_async_db_engine, built_engines, connection_plan, read_only=True),
    )
    # DATABASE_READ_URL: a read-only engine per replica, sync and async, and what is known of
    # each replica (up, lag), shared by both paths. The read engines above stay: the fallback.
    # An overriding engine has no replicas.
    replica_state = providers.ThreadSafeSingleton(
        _replicas_unless_given_an_engine,
        engine.provider,
        async_engine.provider,
        providers.ThreadSafeSingleton(ReplicaSet.of, settings).provider,
    )
    replica_engines = _followed(engine, _no_replicas, providers.ThreadSafeSingleton(
        build_replica_engines, create_sync_engine, built_engines.provided.add_replica,
        replica_plans, replica_state,
    ))  # fmt: skip
    async_replica_engines = _followed(async_engine, _no_replicas, providers.ThreadSafeSingleton(
        build_replica_engines, create_async_db_engine, built_engines.provided.add_replica,
        replica_plans, replica_state,
    ))  # fmt: skip
    read_replicas = providers.ThreadSafeSingleton(ReadReplicas, replica_engines, replica_state)
    # The direct endpoint (DATABASE_DIRECT_URL, or derived: plan_direct): migrations, advisory
    # locks, LISTEN, long admin work, never through a pooler. Built on first use, unpooled. An
    # engine given to the container is the whole database, so the direct engine is that one.
    direct_plan = providers.ThreadSafeSingleton(plan_direct, settings, connection_plan)
    direct_engine = _followed(
        engine, _the_same, _engine(create_direct_engine, built_engines, direct_plan, role="direct")
    )
    # What /health/db and the startup line look at: the write engine, or the async one when
    # that alone was given to the container (an async app's whole database).
    probed_engine = providers.Callable(
        lambda engine, async_engine: (
            async_engine() if async_engine.overridden and not engine.overridden else engine()
        ),
        engine.provider,
        async_engine.provider,
    )

    session_maker = providers.ThreadSafeSingleton(make_session_maker, engine)
    async_session_maker = providers.ThreadSafeSingleton(make_async_session_maker, async_engine)
    # Without replicas, on read_engine as before; with them, routed (backend/db/reads/routing.py).
    read_session_maker = providers.ThreadSafeSingleton(
        make_read_session_maker, read_engine, replica_engines, replica_state
    )
    async_read_session_maker = providers.ThreadSafeSingleton(
        make_async_read_session_maker, async_read_engine, async_replica_engines, replica_state
    )

    # The request's own session of each kind: made on first use, the same object for the
    # route, its dependencies, the services built on it and the response body, and closed
    # once after the response (backend/db/sessions/scope.py). Factories, not Resources: nothing for
    # dependency-injector to shut down, so Closing has nothing to close early.
    session = RequestSession(request_session, session_maker)
    async_session = AsyncRequestSession(request_session, async_session_maker)
    read_session = RequestSession(request_session, read_session_maker)
    async_read_session = AsyncRequestSession(request_session, async_read_session_maker)

    def __new__(
        cls, config_file: str | Path | None = None, **overriding_providers: Any
    ) -> "Container":
        """`config_file` (or the BACKEND_CONFIG variable, which .env may set): your YAML, read
        over the defaults."""
        container = super().__new__(cls, **overriding_providers)
        # The container's own callbacks, given to each BuiltEngines it makes: a provider's
        # arguments outlive reset_singletons().
        container.built_engines.add_args(EngineHooks())
        # Interpolation off (envs_required=None, dependency-injector 4.46+, #861; its stubs say
        # bool): backend/settings/ resolves ${VAR:default} from the exact strings.
        container.config.from_yaml(DEFAULTS_FILE, required=True, envs_required=None)  # type: ignore[arg-type]
        try:
            own = config_file or with_env_file(os.environ).get("BACKEND_CONFIG")
            own_config = read_config_file(own) if own else None
        except ConfigurationError as error:
            # Said when the settings are first built (the app's startup, like any bad
            # setting), not here: an app module makes its container when it is imported, and
            # uvicorn would report an import error instead of the setting's one line.
            container.settings.override(providers.Callable(_refuse, error))
            return container
        if own_config:
            container.config.from_dict(own_config)
        return container


def _refuse(error: ConfigurationError) -> None:
    raise error


def on_engine(container: Container, hook: EngineHook) -> None:
    """Call `hook(engine, role)` for every engine `container` builds, sync and async: the
    write and read engines, each read replica's, the direct one; once each, as it is built,
    and at once for those built already. An exception in it stops the build (startup, or the
    first use of a lazily built engine) with EngineHookError, one line naming it.

    For observability (backend.telemetry.instrument), or any per-engine setup: events,
    listeners. `install(app, on_engine=...)` and `create_app(on_engine=...)` call this.
    """
    container.built_engines().on_each(hook)


def use_database(container: Container, url: str | URL) -> None:
    """Point every engine of `container` at `url`, each keeping its role (tests, tools).

    The read engines stay read-only and the async ones get the URL translated for asyncpg,
    as in production: the URL goes where DATABASE_URL goes, before the settings. Engines
    already built are disposed and rebuilt on next use.
    """
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
    for engine in container.built_engines():
        # An AsyncEngine's connections belong to an event loop: drop them without closing.
        engine.dispose() if isinstance(engine, Engine) else engine.sync_engine.dispose(close=False)
    container.config.database.url.from_value(text)
    # A direct URL of the environment belongs to its DATABASE_URL, not to `url`: the direct
    # endpoint is now `url`'s own (itself, or none behind a pooler), never another database's.
    container.config.database.direct_url.from_value(None)
    container.config.database.url_unpooled.from_value(None)
    container.reset_singletons()
