"""OpenTelemetry for every engine the layer builds: a span per statement, the pools as metrics.

    from backend import install
    from backend.telemetry import instrument

    install(app, on_engine=instrument)  # or create_app(on_engine=instrument)

`instrument(engine, role)` is an on_engine callback (backend/db/container.py): each engine the
container builds, sync or async, write, read, replica or direct, gets the SQLAlchemy
instrumentation (opentelemetry-instrumentation-sqlalchemy: a CLIENT span per statement, with
`db.system`, the statement as sent without its parameters, the server's address), and its pool
is observed as metrics (POOL_METRICS) from the figures /health/db reports. The tracer and meter
providers are the global ones unless given (functools.partial(instrument, tracer_provider=…)).

Not `SQLAlchemyInstrumentor().instrument()`: it instruments the engines made after it by
`sqlalchemy.create_engine`, once per process, and the layer's engines are made otherwise;
`instrument(engine=…)` instruments one engine per process only (its second call is refused
with a warning: open-telemetry/opentelemetry-python-contrib#3977). So each engine gets the
instrumentor's own per-engine tracer, EngineTracer, which is what `instrument(engine=…)` makes.

The SQLAlchemy instrumentation declares `sqlalchemy<2.1.0`; the instrumentor's dependency check
then refuses to instrument anything on SQLAlchemy 2.1 (an error in the log, no span). That check
is not on this path: the statement spans are tested here on 2.1 and on 2.0
(tests/integration/test_telemetry.py), and `declared_range_excludes_this_sqlalchemy()` says
when the layer is past it.

Needs the `otel` extra, imported on first use: `pip install 'fastapi-sqlmodel-neon[otel]'`.
"""

import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db.container import EngineRole
from backend.db.engines.health import pool_status

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import TracerProvider

MISSING = (
    "backend.telemetry needs OpenTelemetry, which is not installed: "
    "pip install 'fastapi-sqlmodel-neon[otel]'"
)

# Each pool's figures, as /health/db reports them (backend/db/engines/health.py): the metric's
# name, unit and meaning, the PoolStatus field it reads and the factor to its unit. Gauges, but
# the waits, a count that only grows.
POOL_METRICS = (
    ("backend.db.pool.size", "{connection}", "connections the pool keeps", "size", 1.0),
    ("backend.db.pool.checked_out", "{connection}", "connections in use", "checked_out", 1.0),
    ("backend.db.pool.overflow", "{connection}", "connections past the size", "overflow", 1.0),
    ("backend.db.pool.waits", "{wait}", "checkouts that waited", "waits", 1.0),
    ("backend.db.pool.slowest_wait", "s", "the slowest wait, last minute", "slowest_wait_ms", 1e-3),
)
COUNTERS = {"backend.db.pool.waits"}


def instrument(
    engine: Engine | AsyncEngine,
    role: EngineRole,
    *,
    tracer_provider: "TracerProvider | None" = None,
    meter_provider: "MeterProvider | None" = None,
) -> None:
    """A span per statement on `engine`, and its pool's figures as metrics; once per engine."""
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    instruments = _instruments_for(tracer_provider, meter_provider)
    with _lock:
        if sync_engine in _instrumented:
            return
        _instrumented.add(sync_engine)
    if not _traced_when_made(engine):
        instruments.trace(sync_engine)
    instruments.observe(sync_engine, _pool_attributes(sync_engine, role, engine))


def _traced_when_made(engine: Engine | AsyncEngine) -> bool:
    """Whether the instrumentor traced `engine` already: under `opentelemetry-instrument`, it
    wraps sqlalchemy's create_engine and create_async_engine before the app, and so the layer,
    is imported, and the layer's module then makes its engines with the wrapped ones (which
    trace each engine they make). A second tracer would start a second span per statement,
    and each overwrites the other's: one of the two would never end."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    from backend.db.engines import build

    # The names the layer's module calls, bound when it was imported; wrapt's wrappers keep the
    # function they wrap as __wrapped__.
    name = "create_async_engine" if isinstance(engine, AsyncEngine) else "create_engine"
    wrapped = hasattr(vars(build)[name], "__wrapped__")
    return wrapped and SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry is True


def declared_range_excludes_this_sqlalchemy() -> bool:
    """Whether the SQLAlchemy instrumentation's declared range leaves out the installed
    SQLAlchemy: its own instrument() would then do nothing; instrument() here works."""
    _require()
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    return (
        get_dependency_conflicts(SQLAlchemyInstrumentor().instrumentation_dependencies())
        is not None
    )


def _require() -> None:
    try:
        import opentelemetry.instrumentation.sqlalchemy  # noqa: F401
    except ImportError:
        raise ModuleNotFoundError(MISSING) from None


_lock = threading.Lock()
_instrumented: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _pool_attributes(
    engine: Engine, role: EngineRole, given: Engine | AsyncEngine
) -> dict[str, str | int]:
    """Which pool: the engine's role (and async), and its server (replicas differ by it)."""
    url = engine.url
    attributes: dict[str, str | int] = {
        "db.client.connection.pool.name": f"async {role}"
        if isinstance(given, AsyncEngine)
        else role,
        "server.address": url.host or str(url.query.get("host", "")) or "localhost",
    }
    if url.port:
        attributes["server.port"] = url.port
    return attributes


@dataclass(eq=False)
class _Instruments:
    """One tracer, one meter and their instruments per pair of providers: an instrument is
    made once per meter, and its callbacks read every pool observed through it."""

    tracer: Any
    connections_usage: Any
    pools: "weakref.WeakKeyDictionary[Engine, dict[str, str | int]]" = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def trace(self, engine: Engine) -> None:
        # The instrumentor's per-engine tracer (its listeners on the engine's events): a CLIENT
        # span per statement. Not the package's documented surface, for want of one that
        # instruments engines one at a time (#3977 above); its arguments are the same from
        # 0.55b0 to 0.66, which pyproject.toml bounds and the tests run. No sqlcommenter: the
        # statement is sent, and recorded, as written.
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

        EngineTracer(self.tracer, engine, self.connections_usage, enable_commenter=False)  # type: ignore[no-untyped-call]

    def observe(self, engine: Engine, attributes: dict[str, str | int]) -> None:
        self.pools[engine] = attributes

    def _figures(self, key: str) -> Iterator[tuple[float, dict[str, str | int]]]:
        for engine, attributes in list(self.pools.items()):
            value = pool_status(engine)[key]  # type: ignore[literal-required]
            if value is not None:
                yield value, attributes

    def observations(self, key: str, scale: float) -> "Iterable[Observation]":
        from opentelemetry.metrics import Observation

        return [Observation(value * scale, attributes) for value, attributes in self._figures(key)]


_by_providers: dict[tuple[object, object], _Instruments] = {}


def _instruments_for(
    tracer_provider: "TracerProvider | None", meter_provider: "MeterProvider | None"
) -> _Instruments:
    _require()
    key = (tracer_provider, meter_provider)
    with _lock:
        if key not in _by_providers:
            _by_providers[key] = _make_instruments(tracer_provider, meter_provider)
        return _by_providers[key]


def _make_instruments(
    tracer_provider: "TracerProvider | None", meter_provider: "MeterProvider | None"
) -> _Instruments:
    from opentelemetry.instrumentation.sqlalchemy import version
    from opentelemetry.metrics import get_meter
    from opentelemetry.semconv.metrics import MetricInstruments
    from opentelemetry.trace import get_tracer

    # The SQLAlchemy instrumentation's own name and version, as its instrumentor gets them:
    # the spans read as that instrumentation's wherever they are shown.
    scope = "opentelemetry.instrumentation.sqlalchemy"
    tracer = get_tracer(scope, version.__version__, tracer_provider)
    meter = get_meter(scope, version.__version__, meter_provider)
    instruments = _Instruments(
        tracer=tracer,
        connections_usage=meter.create_up_down_counter(
            name=MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE,
            unit="connections",
            description="The number of connections that are currently in state described by "
            "the state attribute.",
        ),
    )
    pools = get_meter("backend", metadata.version("fastapi-sqlmodel-neon"), meter_provider)
    for name, unit, description, key, scale in POOL_METRICS:
        create = (
            pools.create_observable_counter if name in COUNTERS else pools.create_observable_gauge
        )
        create(name, [_reading(instruments, key, scale)], unit=unit, description=description)
    return instruments


def _reading(instruments: _Instruments, key: str, scale: float) -> Any:
    def read(_: "CallbackOptions") -> "Iterable[Observation]":
        return instruments.observations(key, scale)

    return read
