"""A user's Alembic project (alembic.ini beside this file: a throwaway model, two revisions,
an env.py that is the one line `run_migrations(metadata)`), run as a deploy step would run it:
on the suite's PostgreSQL, and with DATABASE_URL on PgBouncer in transaction mode, where the
migrations must go to the direct endpoint, as PgBouncer's own log shows."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from backend import Container, SessionDep
from backend.migrations import MIGRATION_LOCK
from backend.testing.drivers import with_run_driver
from backend.testing.postgres import TestServer
from tests.conftest import project_root, serving, use_database

INI = Path(__file__).resolve().parent / "alembic.ini"


def alembic_process(
    *args: str, env_file: Path | None = None, **settings: str
) -> subprocess.Popen[str]:
    """`alembic -c tests/migrations/alembic.ini ARGS` started in a process of its own, from
    the repository's root, with DATABASE_* given by short name (or in `env_file`, a .env) and
    nothing else of ours."""
    ours = ("DATABASE_", "PG", "BACKEND_CONFIG", "BACKEND_ENV_FILE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env |= {f"DATABASE_{name.upper()}": value for name, value in settings.items()}
    if env_file is not None:
        env["BACKEND_ENV_FILE"] = str(env_file)
    return subprocess.Popen(
        [sys.executable, "-m", "alembic", "-c", str(INI), *args],
        cwd=project_root(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def alembic(
    *args: str, env_file: Path | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    """The same, run to its end."""
    process = alembic_process(*args, env_file=env_file, **settings)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def shown(url: URL) -> str:
    return with_run_driver(url).render_as_string(hide_password=False)


def columns(url: URL) -> dict[str, list[str]]:
    """The migrated tables and their columns, and the revision: the server's view."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables = {
            name: [column["name"] for column in inspector.get_columns(name)]
            for name in inspector.get_table_names()
            if name in ("migrated_hero", "alembic_version")
        }
        if "alembic_version" in tables:
            with engine.connect() as connection:
                versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
                tables["alembic_version"] = list(versions.scalars())
        return tables
    finally:
        engine.dispose()


def test_upgrade_and_downgrade_on_the_database_url(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    use_database(monkeypatch, database_url)
    config = Config(str(INI))
    command.upgrade(config, "head")
    assert columns(database_url) == {
        "migrated_hero": ["id", "name", "secret_name"],
        "alembic_version": ["add_secret_name"],
    }
    command.downgrade(config, "create_hero")
    assert columns(database_url) == {
        "migrated_hero": ["id", "name"],
        "alembic_version": ["create_hero"],
    }
    command.downgrade(config, "base")
    assert columns(database_url) == {"alembic_version": []}


def pgbouncer_logins(postgres: TestServer, database: str) -> list[str]:
    """The client logins PgBouncer logged for `database` (log_connections, its default)."""
    assert postgres.pooler is not None
    log = (postgres.pooler.root / "pgbouncer.log").read_text()
    return [line for line in log.splitlines() if f"login attempt: db={database} " in line]


router = APIRouter()


@router.post("/heroes")
def add_hero(name: str, session: SessionDep) -> list[str]:
    session.execute(sa.text("INSERT INTO migrated_hero (name) VALUES (:name)"), {"name": name})
    session.commit()
    return list(session.execute(sa.text("SELECT name FROM migrated_hero")).scalars())


def test_alembic_upgrade_head_goes_to_the_direct_endpoint_not_the_pooler(
    monkeypatch: pytest.MonkeyPatch,
    postgres: TestServer,
    database_name: str,
    database_url: URL,
    pooler_url: URL,
) -> None:
    upgraded = alembic(
        "upgrade", "head",
        url=shown(pooler_url), pooler="pgbouncer", direct_url=shown(database_url),
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade create_hero -> add_secret_name" in upgraded.stderr
    assert columns(database_url)["alembic_version"] == ["add_secret_name"]
    # PgBouncer saw no client for this database: the migrations went around it.
    assert pgbouncer_logins(postgres, database_name) == []
    # ...where the app, on the same settings, serves through the pooler, and is logged there.
    use_database(monkeypatch, pooler_url, pooler="pgbouncer", direct_url=shown(database_url))
    with TestClient(serving(Container(), sys.modules[__name__])) as client:
        assert client.post("/heroes", params={"name": "Deadpond"}).json() == ["Deadpond"]
    assert pgbouncer_logins(postgres, database_name) != []


def test_a_neon_style_env_file_migrates_on_its_unpooled_url(
    postgres: TestServer, database_name: str, database_url: URL, pooler_url: URL, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"  # as Neon's integrations write it, beside the pooled URL
    env_file.write_text(
        f"DATABASE_URL='{shown(pooler_url)}'\nDATABASE_POOLER=pgbouncer\n"
        f"DATABASE_URL_UNPOOLED='{shown(database_url)}'\n"
    )
    upgraded = alembic("upgrade", "head", env_file=env_file)
    assert upgraded.returncode == 0, upgraded.stderr
    assert columns(database_url)["alembic_version"] == ["add_secret_name"]
    assert pgbouncer_logins(postgres, database_name) == []


def one_line_failure(refused: subprocess.CompletedProcess[str], url: URL) -> str:
    """What a failed `alembic` said: one line, a non-zero exit, no password."""
    assert refused.returncode != 0
    said = (refused.stdout + refused.stderr).strip()
    assert len(said.splitlines()) == 1, said
    assert str(url.password) not in said
    return said


def test_a_pooler_with_no_direct_endpoint_known_fails_in_one_line(pooler_url: URL) -> None:
    refused = alembic("upgrade", "head", url=shown(pooler_url), pooler="pgbouncer")
    said = one_line_failure(refused, pooler_url)
    assert said.startswith("FAILED: no direct endpoint is known:")
    assert "DATABASE_DIRECT_URL is not set" in said


def test_an_unreachable_database_fails_in_one_line(database_url: URL) -> None:
    closed = database_url.set(port=1)
    refused = alembic("upgrade", "head", url=shown(closed), connect_retries="0")
    said = one_line_failure(refused, closed)
    assert said.startswith("FAILED: the direct endpoint ")
    assert "did not connect: OperationalError: " in said


def test_offline_mode_writes_the_sql_without_connecting(database_url: URL) -> None:
    closed = database_url.set(port=1)
    written = alembic("upgrade", "head", "--sql", url=shown(closed))
    assert written.returncode == 0, written.stderr
    assert "CREATE TABLE migrated_hero" in written.stdout
    assert "CREATE INDEX ix_migrated_hero_secret_name" in written.stdout
    assert str(database_url.password) not in written.stdout + written.stderr


def test_deploy_steps_at_once_migrate_one_after_the_other(
    admin_engine: sa.Engine, database_name: str, database_url: URL
) -> None:
    lock = sa.text("SELECT pg_advisory_lock(:key)")
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :name "
        "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
    )
    # Another deploy step, midway (its own connection: closing it ends its session and lock).
    with sa.create_engine(database_url, poolclass=NullPool).connect() as holder:
        holder.execute(lock, {"key": MIGRATION_LOCK})
        holder.commit()
        second = alembic_process("upgrade", "head", url=shown(database_url))
        with admin_engine.connect() as admin:
            while not admin.execute(waiting, {"name": database_name}).scalar():
                assert second.poll() is None, second.communicate()
                time.sleep(0.05)
        assert "alembic_version" not in columns(database_url)  # it waits, and has done nothing
    _, err = second.communicate(timeout=120)  # the holder's connection closed: its turn
    assert second.returncode == 0, err
    assert columns(database_url)["alembic_version"] == ["add_secret_name"]
