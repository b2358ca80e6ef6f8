"""backend's pytest plugin: a real PostgreSQL per run, per-test isolation, Neon on tap.

Registered through the `pytest11` entry point, as pytest-django is: installing the package
enables it, with no `pytest_plugins` line (`-p no:backend` disables it). This module holds the
hooks; the fixtures live in backend/testing/fixtures.py and are imported here so that pytest
finds them on the plugin. It starts nothing and imports nothing heavy until a test asks for
one of its fixtures. docs/testing.md documents each fixture.
"""

from __future__ import annotations

import pytest

from backend.testing.fixtures import (  # noqa: F401 (imported so pytest registers them here)
    backend_app,
    backend_async_client,
    backend_client,
    backend_database,
    backend_databases,
    backend_db,
    backend_neon,
    backend_schema,
    backend_server,
    backend_transactional_db,
    kept_data_dir,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backend", "backend: a real PostgreSQL for your app's tests")
    group.addoption(
        "--backend-reuse-db",
        action="store_true",
        default=False,
        help="keep the test server's data folder between runs: the next run starts it "
        "instead of making a new cluster (the server itself still stops at the end)",
    )
    parser.addini(
        "backend_app",
        "your app for backend_client and backend_async_client, as package.module:app "
        "(or a function that makes it)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backend_pooler: the app reaches the test database through PgBouncer in transaction "
        "mode, as through Neon's -pooler endpoint (database mode; skipped without pgbouncer)",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption("backend_reuse_db"):
        return f"backend: server data kept in {kept_data_dir(config)} (--backend-reuse-db)"
    return None
