"""OpenTelemetry through the on_engine hook: a span per statement on every engine, the pools'
figures as metrics, read back from the SDK's in-memory exporter and reader."""

import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend import (
    AsyncReadSessionDep,
    AsyncSessionDep,
    Container,
    ReadSessionDep,
    SessionDep,
    create_app,
    install,
    on_engine,
)
from backend.testing.drivers import run_driver
from tests.conftest import use_database

pytest.importorskip(
    "opentelemetry.instrumentation.sqlalchemy",
    reason="the otel extra is not installed: pip install -e '.[otel]'",
)
pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk (the dev group's)")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from backend.telemetry import declared_range_excludes_this_sqlalchemy, instrument

SECRET = "s3cret-parameter-value"
router = APIRouter()


def marked(marker: str) -> sa.TextClause:
    return sa.text(f"SELECT CAST(:value AS text) AS {marker}")


@router.get("/write")
def write(session: SessionDep) -> dict[str, Any]:
    return {"value": session.scalar(marked("on_write"), {"value": SECRET})}


@router.get("/read")
def read(session: ReadSessionDep) -> dict[str, Any]:
    return {"value": session.scalar(marked("on_read"), {"value": SECRET})}


@router.get("/async/write")
async def async_write(session: AsyncSessionDep) -> dict[str, Any]:
    return {"value": await session.scalar(marked("on_async_write"), {"value": SECRET})}


@router.get("/async/read")
async def async_read(session: AsyncReadSessionDep) -> dict[str, Any]:
    return {"value": await session.scalar(marked("on_async_read"), {"value": SECRET})}


@router.get("/pool/while-holding")
def pool_while_holding(request: Request, session: SessionDep) -> dict[str, Any]:
    session.connection().execute(sa.text("SELECT 1"))  # the request's connection, held
    return pool_figures(request.app.state.metric_reader, "write")


@router.get("/async/pool/while-holding")
async def async_pool_while_holding(request: Request, session: AsyncSessionDep) -> dict[str, Any]:
    await session.scalar(sa.text("SELECT 1"))  # the request's connection, held
    return pool_figures(request.app.state.metric_reader, "async write")


class Telemetry:
    """An app's OpenTelemetry SDK, kept in memory: what an exporter would send."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])
        self.on_engine = partial(
            instrument, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def statement_spans(self, marker: str) -> list[ReadableSpan]:
        return [
            span for span in self.spans.get_finished_spans() if marker in str(statement_of(span))
        ]

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.shutdown()


# Each attribute's name before and after the database semantic conventions' migration
# (OTEL_SEMCONV_STABILITY_OPT_IN=database): the instrumentation writes either, or both.
NAMES = {
    "statement": ("db.statement", "db.query.text"),
    "system": ("db.system", "db.system.name"),
    "address": ("net.peer.name", "server.address"),
    "port": ("net.peer.port", "server.port"),
}


def attribute(span: ReadableSpan, what: str) -> object:
    old, new = NAMES[what]
    attributes = span.attributes or {}
    return attributes.get(old, attributes.get(new))


def statement_of(span: ReadableSpan) -> object:
    return attribute(span, "statement")


def pools(reader: InMemoryMetricReader) -> dict[str, dict[str, Any]]:
    """Each pool's backend.db.pool.* metrics as exported now, by the pool's name."""
    figures: dict[str, dict[str, Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    pool = (point.attributes or {}).get("db.client.connection.pool.name")
                    if pool is not None and metric.name.startswith("backend.db.pool."):
                        figures.setdefault(str(pool), {})[metric.name] = point.value  # type: ignore[union-attr]
    return figures


def pool_figures(reader: InMemoryMetricReader, pool: str) -> dict[str, Any]:
    return pools(reader)[pool]


def assert_one_statement_span(telemetry: Telemetry, marker: str, url: URL) -> None:
    (span,) = telemetry.statement_spans(marker)
    assert span.kind is SpanKind.CLIENT
    assert attribute(span, "system") == "postgresql"
    statement = str(statement_of(span))
    # As sent: the driver's placeholder, after the read engines' READ ONLY where they add it.
    assert statement.endswith(f"AS {marker}")
    assert "SELECT CAST(" in statement
    assert SECRET not in statement  # the statement as sent, its parameters apart
    assert all(SECRET not in str(value) for value in (span.attributes or {}).values())
    assert attribute(span, "address") == url.host
    assert attribute(span, "port") == url.port


def test_a_span_per_statement_on_every_engine_of_create_app(
    container: Container, telemetry: Telemetry, database_url: URL
) -> None:
    app = create_app(container, routers=[router], on_engine=telemetry.on_engine)
    with TestClient(app) as client:
        for path in ("/write", "/read", "/async/write", "/async/read"):
            assert client.get(path).json() == {"value": SECRET}
    for marker in ("on_write", "on_read", "on_async_write", "on_async_read"):
        assert_one_statement_span(telemetry, marker, database_url)
    observed = pools(telemetry.metric_reader)
    assert set(observed) == {"write", "read", "async write", "async read"}
    for figures in observed.values():
        assert figures["backend.db.pool.size"] == 20  # the container fixture's DATABASE_POOL_SIZE
        assert figures["backend.db.pool.checked_out"] == 0


def test_a_span_per_statement_on_an_app_of_your_own(
    container: Container, telemetry: Telemetry, database_url: URL
) -> None:
    app = FastAPI()
    app.include_router(router)
    install(app, container, on_engine=telemetry.on_engine)
    with TestClient(app) as client:
        assert client.get("/write").json() == {"value": SECRET}
        assert client.get("/async/read").json() == {"value": SECRET}
    assert_one_statement_span(telemetry, "on_write", database_url)
    assert_one_statement_span(telemetry, "on_async_read", database_url)


def test_a_read_replica_gets_its_own_spans(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, front_url: URL, telemetry: Telemetry
) -> None:
    # The same database behind the TLS front: another server address as far as the app knows,
    # and one that is not in recovery, so reads go to it.
    use_database(monkeypatch, database_url)
    monkeypatch.setenv("DATABASE_READ_URL", front_url.render_as_string(hide_password=False))
    roles: list[tuple[str, str]] = []
    container = Container()
    on_engine(container, lambda engine, role: roles.append((role, type(engine).__name__)))
    app = create_app(container, routers=[router], on_engine=telemetry.on_engine)
    with TestClient(app) as client:
        assert client.get("/read").json() == {"value": SECRET}
        assert client.get("/async/read").json() == {"value": SECRET}
    assert ("replica", "Engine") in roles
    assert ("replica", "AsyncEngine") in roles
    assert_one_statement_span(telemetry, "on_read", front_url)
    assert_one_statement_span(telemetry, "on_async_read", front_url)


def test_the_pool_figures_as_metrics(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, telemetry: Telemetry
) -> None:
    use_database(monkeypatch, database_url, pool_size="1", max_overflow="0", pool_timeout="0.2")
    app = create_app(Container(), routers=[router], on_engine=telemetry.on_engine)
    app.state.metric_reader = telemetry.metric_reader
    with TestClient(app) as client:
        during = client.get("/pool/while-holding").json()
        during_async = client.get("/async/pool/while-holding").json()
        after = pool_figures(telemetry.metric_reader, "write")
        after_async = pool_figures(telemetry.metric_reader, "async write")
        engine = app.state.container.engine()
        with engine.connect(), pytest.raises(sa.exc.TimeoutError), engine.connect():
            pass  # the only connection is held: this checkout waits, then gives up
        waited = pool_figures(telemetry.metric_reader, "write")
    assert during["backend.db.pool.checked_out"] == 1
    assert during_async["backend.db.pool.checked_out"] == 1
    assert after_async["backend.db.pool.checked_out"] == 0
    assert during["backend.db.pool.size"] == 1
    assert during["backend.db.pool.overflow"] == 0
    assert after["backend.db.pool.checked_out"] == 0
    assert after["backend.db.pool.waits"] == 0
    assert waited["backend.db.pool.waits"] > after["backend.db.pool.waits"]
    assert waited["backend.db.pool.slowest_wait"] > 0


def test_the_sqlalchemy_instrumentations_declared_range_is_known() -> None:
    # It declares sqlalchemy<2.1.0: its own instrument() refuses SQLAlchemy 2.1, this path
    # does not ask (the spans above are tested on both).
    from sqlalchemy import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    assert declared_range_excludes_this_sqlalchemy() is ((major, minor) >= (2, 1))


def test_without_the_extra_one_line_names_it(
    monkeypatch: pytest.MonkeyPatch, container: Container
) -> None:
    import sys

    for name in [name for name in sys.modules if name.startswith("opentelemetry")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fastapi-sqlmodel-neon\[otel\]'"):
        instrument(container.engine(), "write")
    container.engine().dispose()


# The run's sync driver (BACKEND_TEST_DRIVER): its OpenTelemetry instrumentation, and which
# instrumentations trace a statement while it is on. psycopg2's cursor class is kept, bounded;
# psycopg 3's bounded connections set their own cursor class after connecting, in its place.
DRIVER_INSTRUMENTATIONS = {
    "psycopg2": ("opentelemetry.instrumentation.psycopg2", "Psycopg2Instrumentor"),
    "psycopg": ("opentelemetry.instrumentation.psycopg", "PsycopgInstrumentor"),
}
TRACED_BY = {
    "psycopg2": {
        "opentelemetry.instrumentation.sqlalchemy",
        "opentelemetry.instrumentation.psycopg2",
    },
    "psycopg": {"opentelemetry.instrumentation.sqlalchemy"},
}


@pytest.fixture
def driver_instrumented(telemetry: Telemetry) -> Iterator[str]:
    """The sync driver's own instrumentation on, as `opentelemetry-instrument` turns it on."""
    module, name = DRIVER_INSTRUMENTATIONS[run_driver()]
    instrumentation = pytest.importorskip(module, reason=f"{module} is not installed (dev group)")
    instrumentor = getattr(instrumentation, name)()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    yield run_driver()
    instrumentor.uninstrument()


def test_the_statement_deadline_holds_under_the_drivers_instrumentation(
    monkeypatch: pytest.MonkeyPatch,
    database_url: URL,
    telemetry: Telemetry,
    driver_instrumented: str,
) -> None:
    use_database(monkeypatch, database_url, statement_timeout="0.5")
    app = create_app(Container(), routers=[router], on_engine=telemetry.on_engine)
    with TestClient(app) as client:
        assert client.get("/write").json() == {"value": SECRET}
        engine = app.state.container.engine()
        with engine.connect() as connection, pytest.raises(sa.exc.OperationalError) as stalled:
            connection.execute(sa.text("SELECT pg_sleep(5)"))  # ten times the deadline
    # Cut off by the layer's deadline (psycopg2's or psycopg 3's StatementTimeout), not answered.
    assert type(stalled.value.orig).__name__ == "StatementTimeout"
    scopes = {
        span.instrumentation_scope.name
        for span in telemetry.statement_spans("on_write")
        if span.instrumentation_scope
    }
    assert scopes == TRACED_BY[driver_instrumented]


# An app run under `opentelemetry-instrument`: the SQLAlchemy instrumentor is on before the app
# (and the layer) is imported, where its dependency check lets it (SQLAlchemy 2.0), so that the
# layer's own module makes its engines with the instrumentor's create_engine.
AUTO_INSTRUMENTED_APP = """
from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

class Started(SpanProcessor):
    count = 0

    def on_start(self, span, parent_context=None):
        Started.count += 1

ended = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(Started())
provider.add_span_processor(SimpleSpanProcessor(ended))
trace.set_tracer_provider(provider)
SQLAlchemyInstrumentor().instrument()

import sqlalchemy as sa
from backend import Container, on_engine
from backend.telemetry import instrument

container = Container()
on_engine(container, instrument)
for engine in (container.engine(), container.read_engine()):
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1 AS auto_instrumented"))
statements = [
    span for span in ended.get_finished_spans()
    if "auto_instrumented" in str(span.attributes.get("db.statement"))
]
print(len(statements), Started.count - len(ended.get_finished_spans()))
"""


def test_one_span_per_statement_under_opentelemetry_instrument(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    use_database(monkeypatch, database_url)
    result = subprocess.run(
        [sys.executable, "-c", AUTO_INSTRUMENTED_APP],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    statements, never_ended = result.stdout.split()
    assert statements == "2"  # one per statement, on each engine
    assert never_ended == "0"  # no engine traced twice (a span started, and overwritten)
