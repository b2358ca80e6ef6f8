"""The direct endpoint: DATABASE_DIRECT_URL, DATABASE_URL_UNPOOLED, or derived from a Neon
-pooler DATABASE_URL by Neon's rule; refused where it would be a pooler. No connection."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from dependency_injector import providers
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from backend import Container
from backend.app import _checked, say_which_database
from backend.db.container import use_database
from backend.settings import ConfigurationError, NoDirectEndpoint
from tests.conftest import project_root
from tests.unit.test_settings import NEON, SECRET, make_container

POOLED = NEON.replace("123456.", "123456-pooler.")
DIRECT_HOST = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
OTHER = "postgresql://migrator:M1gr4t0r@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb"


def test_a_pooled_neon_url_gives_its_direct_host_by_neons_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = make_container(monkeypatch, f"{POOLED}?sslmode=verify-full&channel_binding=require")
    direct = container.direct_plan()
    assert container.connection_plan().is_pooler
    assert not direct.is_pooler
    assert direct.target.single_host is not None
    assert direct.target.single_host.host == DIRECT_HOST
    assert direct.source == "derived from DATABASE_URL's -pooler host"
    url = container.direct_engine().url
    assert (url.host, url.username, url.database, url.password) == (
        DIRECT_HOST, "alex", "neondb", SECRET
    )  # fmt: skip
    # DATABASE_URL's TLS and libpq parameters go with it.
    assert url.query["sslmode"] == "verify-full"
    assert url.query["channel_binding"] == "require"


@pytest.mark.parametrize(
    ("pooled_host", "direct_host"),
    [
        (
            "ep-cool-123-pooler.c-2.us-east-2.aws.neon.tech",
            "ep-cool-123.c-2.us-east-2.aws.neon.tech",
        ),
        ("EP-Cool-123-Pooler.eastus2.azure.neon.tech", "ep-cool-123.eastus2.azure.neon.tech"),
    ],
)
def test_the_rule_takes_newer_neon_hosts_in_any_letter_case(
    monkeypatch: pytest.MonkeyPatch, pooled_host: str, direct_host: str
) -> None:
    container = make_container(monkeypatch, f"postgresql://alex:pw@{pooled_host}/neondb")
    assert container.direct_engine().url.host == direct_host


def test_a_neon_pooler_host_taken_for_direct_still_migrates_on_the_direct_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = make_container(monkeypatch, POOLED, DATABASE_POOLER="none")
    assert not container.connection_plan().is_pooler  # the app's engines, as it was told
    assert container.direct_engine().url.host == DIRECT_HOST


def test_without_a_pooler_the_direct_endpoint_is_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = make_container(monkeypatch, NEON)
    assert container.direct_plan() is container.connection_plan()


@pytest.mark.parametrize("variable", ["DATABASE_DIRECT_URL", "DATABASE_URL_UNPOOLED"])
def test_a_direct_url_that_was_set_is_used_and_named(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    container = make_container(monkeypatch, POOLED, **{variable: OTHER})
    direct = container.direct_plan()
    assert direct.source == variable
    assert (direct.target.user, direct.settings.url.password) == ("migrator", "M1gr4t0r")
    assert direct.sslmode == "require"  # a remote host: TLS, as for DATABASE_URL


def test_database_direct_url_wins_over_database_url_unpooled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = make_container(
        monkeypatch, POOLED, DATABASE_DIRECT_URL=OTHER, DATABASE_URL_UNPOOLED=NEON
    )
    assert container.direct_plan().target.user == "migrator"


def test_a_direct_url_goes_through_database_urls_rules_named_as_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = make_container(
        monkeypatch, POOLED, DATABASE_URL_UNPOOLED=f"mysql://alex:{SECRET}@db/neondb"
    )
    with pytest.raises(ConfigurationError) as refused:
        container.direct_plan()
    assert str(refused.value).startswith("DATABASE_URL_UNPOOLED must be a PostgreSQL URL")
    assert SECRET not in str(refused.value)


def test_a_direct_url_that_is_not_a_url_is_refused_at_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = make_container(monkeypatch, NEON, DATABASE_DIRECT_URL=f"alex:{SECRET}@@db")
    with pytest.raises(ConfigurationError) as refused:
        container.settings()
    assert "DATABASE_DIRECT_URL holds more than one '@'" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_a_pooler_given_as_the_direct_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(monkeypatch, POOLED, DATABASE_DIRECT_URL=POOLED)
    with pytest.raises(ConfigurationError) as refused:
        container.direct_engine()
    message = str(refused.value)
    assert message.startswith("DATABASE_DIRECT_URL names a -pooler host")
    assert SECRET not in message
    assert container.built_engines() == []


def test_a_local_pgbouncer_has_no_direct_endpoint_until_one_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = f"postgresql://alex:{SECRET}@127.0.0.1:6432/app"
    container = make_container(monkeypatch, local, DATABASE_POOLER="pgbouncer")
    with pytest.raises(NoDirectEndpoint) as unknown:
        container.direct_engine()
    assert "DATABASE_POOLER=pgbouncer" in str(unknown.value)
    assert "DATABASE_DIRECT_URL is not set" in str(unknown.value)
    assert SECRET not in str(unknown.value)
    # DATABASE_POOLER describes DATABASE_URL: the server beside the PgBouncer is direct.
    server = f"postgresql://alex:{SECRET}@127.0.0.1:5432/app"
    container = make_container(monkeypatch, local, DATABASE_DIRECT_URL=server)
    assert container.direct_engine().url.port == 5432


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alex:pw@pg-pooler.internal.example/app",  # -pooler, but not Neon's
        f"{POOLED}?options=endpoint%3Dep-cool-darkness-123456-pooler",  # Neon's SNI workaround
    ],
)
def test_no_rule_is_guessed_beyond_neons_own_hosts(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    with pytest.raises(NoDirectEndpoint):
        make_container(monkeypatch, url).direct_plan()


def test_the_direct_engine_is_unpooled_and_recorded_for_disposal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = make_container(monkeypatch, POOLED)
    engine = container.direct_engine()
    assert isinstance(engine.pool, NullPool)
    assert container.direct_engine() is engine  # built once
    assert engine in container.built_engines()


def test_an_engine_given_to_the_container_is_also_its_direct_engine() -> None:
    container = Container()
    given: Engine = create_engine("postgresql+psycopg2://tester@127.0.0.1/test")
    container.engine.override(providers.Object(given))
    assert container.direct_engine() is given


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, f"direct endpoint {DIRECT_HOST}:5432 derived from DATABASE_URL's -pooler host"),
        ({"DATABASE_URL_UNPOOLED": OTHER}, f"direct endpoint {DIRECT_HOST}:5432 from "
         "DATABASE_URL_UNPOOLED"),
    ],
)  # fmt: skip
def test_the_startup_line_says_where_the_direct_endpoint_comes_from(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
    said: str,
) -> None:
    container = make_container(monkeypatch, POOLED, **env)
    caplog.set_level(logging.INFO, logger="backend")
    say_which_database(container, _checked(container))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("database ")]
    assert line.endswith(f"; {said}")
    # Said, not built: the direct engine (unpooled) is built on first use.
    assert not any(isinstance(e.pool, NullPool) for e in container.built_engines())


def test_a_refused_direct_url_stops_the_app_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(monkeypatch, POOLED, DATABASE_DIRECT_URL=POOLED)
    with pytest.raises(ConfigurationError, match=r"^DATABASE_DIRECT_URL names a -pooler host"):
        say_which_database(container, _checked(container))


def run_url(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend", "url", "--direct", *args],
        capture_output=True,
        text=True,
        cwd=project_root(),
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )


def test_url_direct_prints_the_direct_endpoint_password_hidden() -> None:
    shown = run_url(DATABASE_URL=POOLED)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"postgresql+psycopg2://alex:***@{DIRECT_HOST}:5432/neondb?")
    assert "sslmode=require" in shown.stdout
    revealed = run_url("--show-password", "--driver", "libpq", DATABASE_URL=POOLED)
    assert revealed.stdout.startswith(f"postgresql://alex:{SECRET}@{DIRECT_HOST}:5432/neondb?")


def test_url_direct_without_a_direct_endpoint_says_which_variable_to_set() -> None:
    local = f"postgresql://alex:{SECRET}@127.0.0.1:6432/app"
    refused = run_url(DATABASE_URL=local, DATABASE_POOLER="pgbouncer")
    assert refused.returncode == 3
    assert refused.stdout == ""
    assert "DATABASE_DIRECT_URL" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert SECRET not in refused.stderr


def test_a_replica_has_no_direct_endpoint_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(
        monkeypatch, POOLED, DATABASE_READ_URL=NEON, DATABASE_URL_UNPOOLED=OTHER
    )
    (replica,) = container.settings().replicas
    assert replica.direct is None
    assert container.settings().direct is not None


def test_use_database_leaves_the_environments_direct_url_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = make_container(
        monkeypatch, POOLED, DATABASE_DIRECT_URL=OTHER, DATABASE_URL_UNPOOLED=OTHER
    )
    use_database(container, "postgresql://tester:pw@127.0.0.1:5432/test")
    assert container.direct_engine().url.username == "tester"  # not the migrator's database


def test_url_direct_reads_database_url_from_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"DATABASE_URL={POOLED}\n")
    shown = run_url(BACKEND_ENV_FILE=str(env_file))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"postgresql+psycopg2://alex:***@{DIRECT_HOST}:5432/neondb?")
