"""Tried as a new user would: backend's wheel (not -e) in a fresh venv outside the repository,
used by a separate package (examples/heroes) with its own table, routes and tests, following
only the README and docs/: serve it on the embedded database, reach that database from another
process, run the package's own tests."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.embedded import free_port
from backend.testing.drivers import run_driver
from tests.conftest import project_root

pytestmark = pytest.mark.skipif(
    os.environ.get("BACKEND_SKIP_WHEEL_TEST") == "1", reason="BACKEND_SKIP_WHEEL_TEST=1"
)


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with backend's wheel (and its embedded extra, and psycopg's for a run on
    psycopg 3) and the heroes package."""
    work = tmp_path_factory.mktemp("new-user")
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", dist, project_root()], check=True)
    (wheel,) = dist.glob("fastapi_sqlmodel_neon-*.whl")
    heroes = shutil.copytree(project_root() / "examples/heroes", work / "heroes")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    # A run on psycopg 3 (BACKEND_TEST_DRIVER=psycopg) installs it as a user would: the extra.
    extras = "embedded,psycopg" if run_driver() == "psycopg" else "embedded"
    python = venv / "bin/python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"fastapi-sqlmodel-neon[{extras}] @ {wheel.as_uri()}", f"{heroes}[test]"],
        check=True,
    )  # fmt: skip
    return work


def run(work: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PG"))}
    return subprocess.run(
        [work / "venv/bin/python", *args],
        cwd=work,  # outside the repository: nothing of it on the path
        env=environ | env,
        capture_output=True,
        text=True,
        check=False,
    )


def get_json(url: str, method: str = "GET", body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_the_wheel_installs_without_the_repository(user_venv: Path) -> None:
    result = run(user_venv, "-c", "import backend, heroes.main; print(backend.__file__)")
    assert result.returncode == 0, result.stderr
    assert "site-packages" in result.stdout
    assert str(project_root()) not in result.stdout


def test_your_app_serves_on_the_embedded_database_and_psql_can_reach_it(user_venv: Path) -> None:
    port, data = free_port(), user_venv / "pgdata"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PG"))}
    job = subprocess.Popen(
        [user_venv / "venv/bin/python", "-m", "backend", "--app", "heroes.main:app",
         "--port", str(port), "--data-dir", str(data)],
        cwd=user_venv, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
        while job.poll() is None and time.monotonic() < deadline:
            try:
                get_json(f"{base}/health/db")
                break
            except OSError:
                time.sleep(0.2)
        hero = get_json(f"{base}/heroes", "POST", {"name": "Rusty", "secret_name": "Tommy"})
        assert isinstance(hero, dict)
        assert hero["name"] == "Rusty"

        printed = run(user_venv, "-m", "backend", "url", "--data-dir", str(data))
        assert ":***@127.0.0.1" in printed.stdout, printed.stdout + printed.stderr
        full = run(user_venv, "-m", "backend", "url", "--data-dir", str(data), "--show-password")
        engine = sa.create_engine(
            full.stdout.strip().replace("postgresql://", "postgresql+psycopg2://")
        )
        with engine.connect() as connection:  # another process, as psql or Alembic would
            names = connection.scalars(sa.text("SELECT name FROM hero")).all()
        engine.dispose()
        assert names == ["Rusty"]
    finally:
        job.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=60)
    assert job.returncode == 0, output
    assert "Traceback" not in output


def test_your_package_tests_pass_with_the_plugin(user_venv: Path) -> None:
    """`pytest` in your package, as the README shows: backend's plugin starts its own server
    from the embedded wheel, with no TEST_DATABASE_URL and no conftest.py to write."""
    result = run(
        user_venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(user_venv / "heroes/tests"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    assert "failed" not in result.stdout
    assert "error" not in result.stdout.lower()
