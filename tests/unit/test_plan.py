"""The connection plan: built once per settings, and what the engines, the startup lines and
`python -m backend check` say is what it holds. Nothing here reaches a server: the URLs name
127.0.0.x:1, where nothing listens."""

import argparse
import logging
import ssl
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.engine import URL

from backend import Container
from backend.app import _checked, say_which_database, say_which_replicas
from backend.cli import BAD_SETTING, CommandError, check, checked_settings
from backend.db.connection import plan as plan_module
from backend.db.connection.plan import ConnectionPlan
from backend.doctor import Options, run_checks
from tests.unit.test_settings import make_container
from tests.unit.tls_files import client_files

PRIMARY = "postgresql://app:pw@127.0.0.1:1/shop"
REPLICA = "postgresql://app:pw@127.0.0.2:1/shop"


def with_query(url: str, **query: str) -> str:
    return url + "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in query.items())


def spy(monkeypatch: pytest.MonkeyPatch, name: str, key: Any) -> Counter[Any]:
    """Count the calls of the plan module's `name`, by `key(*args)`, and let them through."""
    calls: Counter[Any] = Counter()
    real = getattr(plan_module, name)

    def counted(*args: Any) -> Any:
        calls[key(*args)] += 1
        return real(*args)

    monkeypatch.setattr(plan_module, name, counted)
    return calls


def build_everything(container: Container) -> None:
    """What a running app builds before and at its first requests, and what `serve` checks."""
    checked_settings(container)
    engine = _checked(container)
    say_which_database(container, engine)
    say_which_replicas(container)
    for name in ("engine", "async_engine", "read_engine", "async_read_engine"):
        getattr(container, name)()
    container.replica_engines()
    container.async_replica_engines()
    container.read_session_maker()
    container.async_read_session_maker()


def test_the_target_is_resolved_and_the_client_key_loaded_once_per_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files = client_files(tmp_path)
    tls = {
        "sslcert": str(files.cert_file),
        "sslkey": str(files.key_file),
        "sslpassword": files.passphrase,
        "sslrootcert": str(files.ca_file),
        "sslmode": "verify-full",
    }
    container = make_container(
        monkeypatch,
        with_query(PRIMARY, **tls),
        DATABASE_READ_URL=with_query(REPLICA, **tls),
    )
    resolved = spy(monkeypatch, "resolve", lambda url, *_: url.host)
    keys = spy(monkeypatch, "load_client_key", lambda _, settings, files: settings.url.host)
    found = spy(monkeypatch, "tls_files", lambda settings, _: settings.url.host)
    contexts = spy(monkeypatch, "ssl_context", lambda settings, *_: settings.url.host)

    build_everything(container)
    report = run_checks(container, Options(pings=1))  # `python -m backend check`'s steps
    build_everything(container)  # singletons: nothing more

    once_each = Counter({"127.0.0.1": 1, "127.0.0.2": 1})
    assert resolved == keys == found == contexts == once_each
    assert [step.status for step in report.steps[:3]] == ["pass", "pass", "fail"]  # tcp: port 1
    plan = container.connection_plan()
    (replica_plan,) = container.replica_plans()
    assert isinstance(plan.ssl, ssl.SSLContext)
    assert isinstance(replica_plan.ssl, ssl.SSLContext)
    assert replica_plan.ssl is not plan.ssl


def test_engines_copy_the_plans_arguments_and_leave_them_as_they_were(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = make_container(monkeypatch, PRIMARY + "?command_timeout=5")
    plan = container.connection_plan()
    before = dict(plan.async_driver.connect_args)
    container.async_read_engine()  # adds default_transaction_read_only to its own copy
    container.async_engine()
    assert dict(plan.async_driver.connect_args) == before
    assert dict(before["server_settings"]) == {"application_name": "backend"}
    with pytest.raises(TypeError):
        plan.async_driver.connect_args["ssl"] = False  # type: ignore[index]


def test_the_plan_shows_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    url = with_query(PRIMARY.replace(":pw@", ":Zq9-pass@"), sslpassword="Zq9-key", password="Zq9-q")
    plan = make_container(monkeypatch, url).connection_plan()
    assert plan.sync_driver.connect_args["sslpassword"] == "Zq9-key"  # libpq gets it
    assert "Zq9" not in repr(plan)
    assert "Zq9" not in str(plan)


@pytest.mark.parametrize(
    ("env", "pooler", "sslmode"),
    [
        ({}, False, "prefer"),
        ({"DATABASE_POOLER": "pgbouncer", "DATABASE_SSLMODE": "require"}, True, "require"),
    ],
)
def test_the_startup_lines_and_check_say_what_the_plan_holds(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
    pooler: bool,
    sslmode: str,
) -> None:
    container = make_container(monkeypatch, PRIMARY, DATABASE_READ_URL=REPLICA, **env)
    plan = container.connection_plan()
    (replica_plan,) = container.replica_plans()
    assert (plan.is_pooler, plan.sslmode) == (replica_plan.is_pooler, replica_plan.sslmode)
    assert (plan.is_pooler, plan.sslmode) == (pooler, sslmode)

    caplog.set_level(logging.INFO, logger="backend")
    say_which_database(container, _checked(container))
    say_which_replicas(container)
    lines = [record.getMessage() for record in caplog.records if record.name == "backend"]
    kind = "pooler (PgBouncer, transaction mode)" if plan.is_pooler else "direct"
    (database,) = [line for line in lines if line.startswith("database ")]
    assert database.startswith(f"database {shown(plan.sync_driver.url)}")
    assert f", {kind}, sslmode={plan.sslmode}, " in database
    (replica,) = [line for line in lines if line.startswith("read replica ")]
    assert replica.startswith(f"read replica {shown(replica_plan.sync_driver.url)}")
    assert f", {kind}, sslmode={replica_plan.sslmode};" in replica

    report = run_checks(container, Options(pings=1))
    facts = report.steps[0].facts
    assert report.steps[0].name == "settings"
    assert (facts["pooler"], facts["sslmode"]) == (plan.is_pooler, plan.sslmode)
    assert facts["url"] == plan.settings.url.render_as_string(hide_password=True)
    assert [step.facts.get("host") for step in report.steps if step.name == "dns"] == [
        endpoint.host for endpoint in plan.target.endpoints
    ]


def shown(url: URL) -> str:
    """The URL as the startup line shows it: no password, and no query (which the engine's URL
    extends with its keepalives)."""
    return url.set(query={}).render_as_string(hide_password=True)


def test_a_plan_is_a_value_of_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(monkeypatch, PRIMARY)
    plan = container.connection_plan()
    assert isinstance(plan, ConnectionPlan)
    assert plan is container.connection_plan()
    assert plan.settings is container.settings()
    assert plan.origin("host") == "host in DATABASE_URL"
    assert (plan.target.user, plan.target.database) == ("app", "shop")
    assert plan.sync_driver.url.query["sslmode"] == plan.sslmode
    assert plan.async_driver.url.drivername == "postgresql+asyncpg"
    assert container.engine().url.query["sslmode"] == plan.sslmode


def test_check_checks_each_replica_through_its_plan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m backend check` reads the replicas' plans, the app's: a refusal names the
    replica's variable, as at the app's start."""
    bad = REPLICA + "?sslrootcert=/nonexistent/ca.pem"
    make_container(monkeypatch, PRIMARY, DATABASE_READ_URL=f"{REPLICA} {bad}")
    args = argparse.Namespace(json=False, workers=1, engines=("engine",), pings=1)
    message = r"^sslrootcert in DATABASE_READ_URL \(URL 2 of 2\) names /nonexistent/ca\.pem"
    with pytest.raises(CommandError, match=message) as refused:
        check.run(args)
    assert refused.value.code == BAD_SETTING
    assert "✘ tcp" in capsys.readouterr().out  # the primary was checked first, as before
