"""asyncpg is an extra: a sync-only app runs without it, and the async path says what to add."""

import os
import subprocess
import sys

import pytest

from backend import ConfigurationError, Container


@pytest.fixture
def without_asyncpg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if it were not installed
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@127.0.0.1:5432/app")


def test_the_sync_engine_needs_no_asyncpg(without_asyncpg: None) -> None:
    engine = Container().engine()
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()


def test_the_async_engine_without_asyncpg_is_one_line_naming_the_extra(
    without_asyncpg: None,
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Container().async_engine()
    assert str(raised.value) == (
        "the async engine needs asyncpg, which is not installed: "
        "pip install 'fastapi-sqlmodel-neon[asyncpg]'"
    )
    assert "secret" not in str(raised.value)


def test_the_whole_layer_imports_and_serves_sync_without_asyncpg() -> None:
    program = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "import backend.app, backend.main, backend.testing.plugin, backend.cli.check\n"
        "from backend import Container, get_session, install\n"
        "engine = Container().engine()\n"
        "print(engine.dialect.driver)\n"
    )
    env = {**os.environ, "DATABASE_URL": "postgresql://app:secret@127.0.0.1:5432/app"}
    result = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "psycopg2\n"
