"""Where the configuration comes from: the package's defaults, your own file over them, and the
environment over both, as the exact strings that were set."""

from pathlib import Path

import pytest

from backend import Container
from backend.db.container import DEFAULTS_FILE
from backend.settings import ConfigurationError

URL = "postgresql://app:pw@ep-cool-1.eu-central-1.aws.neon.tech/app"


def test_the_defaults_ship_inside_the_package() -> None:
    assert DEFAULTS_FILE.parent.name == "backend"
    assert "${DATABASE_POOL_SIZE:5}" in DEFAULTS_FILE.read_text()


def test_your_own_file_is_read_over_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "service.yml"
    own.write_text("database:\n  pool_size: ${SERVICE_POOL:3}\n  echo: true\n")
    monkeypatch.setenv("DATABASE_URL", URL)
    settings = Container(config_file=own).settings()
    assert (settings.pool_size, settings.echo, settings.max_overflow) == (3, True, 5)
    monkeypatch.setenv("SERVICE_POOL", "011")  # a string, never YAML's octal
    monkeypatch.setenv("BACKEND_CONFIG", str(own))
    assert Container().settings().pool_size == 11


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("DATABASE_POOL_SIZE", "7")
    assert Container().settings().pool_size == 7


def test_a_missing_own_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_CONFIG", "/nonexistent/service.yml")
    container = Container()  # as an app module makes it, at import: nothing read yet fails
    with pytest.raises(ConfigurationError, match="BACKEND_CONFIG / config_file /nonexistent"):
        container.settings()
