"""A new service deployed as docs/deploy.md says: `.env` with a pooled URL and the unpooled one,
`alembic upgrade head` as the deploy step, the app serving through the pooler, its statements
traced and its pools measured. Each step is checked from outside the layer: the server's
tables, PgBouncer's own log, the OpenTelemetry SDK's in-memory exporter and reader."""

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend import ReadSessionDep, SessionDep, install
from backend.testing.drivers import async_driver, with_run_driver
from backend.testing.postgres import TestServer

pytest.importorskip(
    "alembic", reason="the alembic extra is not installed: pip install -e '.[alembic]'"
)
pytest.importorskip(
    "opentelemetry.instrumentation.sqlalchemy",
    reason="the otel extra is not installed: pip install -e '.[otel]'",
)
pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk (the dev group's)")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from backend.telemetry import instrument

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/migrations
prepend_sys_path = .
path_separator = os
"""

ENV_PY = """\
from backend.migrations import run_migrations
from shop.models import metadata

run_migrations(metadata)
"""

MODELS = """\
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
order = Table(
    "shop_order", metadata,
    Column("id", Integer, primary_key=True),
    Column("item", String(100), nullable=False),
)
"""

REVISION = """\
import sqlalchemy as sa
from alembic import op

revision = "create_order"
down_revision = None


def upgrade():
    op.create_table(
        "shop_order",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item", sa.String(100), nullable=False),
    )


def downgrade():
    op.drop_table("shop_order")
"""

router = APIRouter()


@router.post("/orders")
def place_order(item: str, session: SessionDep) -> dict[str, int]:
    placed = session.execute(
        sa.text("INSERT INTO shop_order (item) VALUES (:item) RETURNING id"), {"item": item}
    )
    order_id = placed.scalar_one()
    session.commit()
    return {"id": order_id}


@router.get("/orders")
def list_orders(session: ReadSessionDep) -> list[str]:
    return list(session.execute(sa.text("SELECT item FROM shop_order ORDER BY id")).scalars())


def make_project(folder: Path, pooled: URL, direct: URL) -> None:
    """A service's folder as a developer following Neon's quickstart has it."""
    shown = partial(URL.render_as_string, hide_password=False)
    (folder / ".env").write_text(
        f"DATABASE_URL='{shown(with_run_driver(pooled))}'\n"
        # Neon's pooler is recognised by its host name; the suite's PgBouncer is on 127.0.0.1.
        "DATABASE_POOLER=pgbouncer\n"
        f"DATABASE_URL_UNPOOLED='{shown(with_run_driver(direct))}'\n"
        f"DATABASE_ASYNC_DRIVER={async_driver()}\n"
    )
    (folder / "alembic.ini").write_text(ALEMBIC_INI)
    (folder / "shop").mkdir()
    (folder / "shop" / "__init__.py").write_text("")
    (folder / "shop" / "models.py").write_text(MODELS)
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    (folder / "migrations" / "env.py").write_text(ENV_PY)
    (versions / "create_order.py").write_text(REVISION)


def pgbouncer_logins(postgres: TestServer, database: str) -> int:
    """The client logins PgBouncer logged for `database` (log_connections, its default)."""
    assert postgres.pooler is not None
    log = (postgres.pooler.root / "pgbouncer.log").read_text()
    return sum(f"login attempt: db={database} " in line for line in log.splitlines())


def test_a_new_service_deployed_on_the_pooler_and_the_direct_endpoint(
    postgres: TestServer,
    database_name: str,
    database_url: URL,
    pooler_url: URL,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_project(tmp_path, pooler_url, database_url)

    # The deploy step, in a process of its own, configured by the folder's .env alone.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PG"))}
    migrated = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    server = sa.create_engine(database_url)
    try:
        assert {"shop_order", "alembic_version"} <= set(sa.inspect(server).get_table_names())
    finally:
        server.dispose()
    assert pgbouncer_logins(postgres, database_name) == 0, "the migration went through the pooler"

    # The app, from the same folder: a plain FastAPI() with the layer and its telemetry.
    monkeypatch.chdir(tmp_path)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])
    app = FastAPI()
    app.include_router(router)
    install(
        app,
        on_engine=partial(
            instrument, tracer_provider=tracer_provider, meter_provider=meter_provider
        ),
    )
    try:
        with TestClient(app) as client:
            assert client.post("/orders", params={"item": "tea"}).json() == {"id": 1}
            assert client.get("/orders").json() == ["tea"]
        assert pgbouncer_logins(postgres, database_name) > 0  # the app went through the pooler

        statements = {
            str(attributes.get("db.statement", attributes.get("db.query.text"))): attributes
            for span in spans.get_finished_spans()
            if (attributes := dict(span.attributes or {}))
        }
        inserts = [s for s in statements if s.startswith("INSERT INTO shop_order")]
        reads = [s for s in statements if "SELECT item FROM shop_order" in s]
        assert inserts, list(statements)
        assert reads, list(statements)
        for statement in (inserts[0], reads[0]):
            attributes = statements[statement]
            assert attributes.get("db.system", attributes.get("db.system.name")) == "postgresql"
            assert attributes.get("net.peer.port", attributes.get("server.port")) == pooler_url.port
            assert "tea" not in statement  # the statement, its parameters apart

        data = metrics.get_metrics_data()
        assert data is not None
        measured = {
            (metric.name, str((point.attributes or {}).get("db.client.connection.pool.name")))
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points
        }
        assert ("backend.db.pool.size", "write") in measured
        assert ("backend.db.pool.checked_out", "read") in measured
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
