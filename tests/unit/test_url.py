"""The URL rules: driver, TLS policy, Neon's pooler, and engine options, without a server."""

import logging

import pytest
from psycopg2.extensions import libpq_version
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from backend.db.connection.target import resolve
from backend.db.connection.tls import effective_sslmode
from backend.db.connection.url import libpq_args
from backend.settings import ConfigurationError
from tests.unit.test_settings import NEON, SECRET, make_container

NEON_POOLER = NEON.replace("123456.", "123456-pooler.")


def engine_for(monkeypatch: pytest.MonkeyPatch, url: str, **env: str) -> Engine:
    return make_container(monkeypatch, url, **env).engine()


@pytest.mark.parametrize(
    "scheme", ["postgres", "postgresql", "postgresql+psycopg2", "postgresql+asyncpg"]
)
def test_every_postgres_scheme_becomes_psycopg2_and_keeps_its_parameters(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    url = (
        NEON.replace("postgresql", scheme, 1) + "?channel_binding=require&target_session_attrs=any"
    )
    engine = engine_for(monkeypatch, url)
    assert engine.url.drivername == "postgresql+psycopg2"
    assert engine.url.query["channel_binding"] == "require"
    assert engine.url.query["target_session_attrs"] == "any"
    assert (engine.url.username, engine.url.password) == ("alex", SECRET)


@pytest.mark.parametrize(
    ("query", "env", "sslmode"),
    [
        ("", {}, "require"),
        ("?sslmode=require", {}, "require"),
        ("?sslmode=verify-ca", {}, "verify-ca"),
        ("?sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt", {}, "verify-full"),
        ("?sslmode=require", {"DATABASE_SSLMODE": "verify-full"}, "verify-full"),
        ("?sslmode=disable", {"DATABASE_ALLOW_INSECURE": "true"}, "disable"),
    ],
)
def test_a_remote_host_gets_tls(
    monkeypatch: pytest.MonkeyPatch, query: str, env: dict[str, str], sslmode: str
) -> None:
    engine = engine_for(monkeypatch, NEON + query, **env)
    assert engine.url.query["sslmode"] == sslmode


@pytest.mark.parametrize("sslmode", ["disable", "allow", "prefer"])
@pytest.mark.parametrize("where", ["url", "variable"])
def test_plaintext_to_a_remote_host_is_refused(
    monkeypatch: pytest.MonkeyPatch, sslmode: str, where: str
) -> None:
    if where == "url":
        url, env = f"{NEON}?sslmode={sslmode}", {}
    else:
        url, env = NEON, {"DATABASE_SSLMODE": sslmode}
    with pytest.raises(ConfigurationError, match="DATABASE_ALLOW_INSECURE=true") as error:
        engine_for(monkeypatch, url, **env)
    assert f"sslmode={sslmode}" in str(error.value)
    assert SECRET not in str(error.value)


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("postgresql://u:p@localhost/db", True),
        ("postgresql://u:p@127.0.0.1:5433/db", True),
        ("postgresql://u:p@127.8.9.10/db", True),
        ("postgresql://u:p@[::1]:5432/db", True),
        ("postgresql://u:p@/db?host=/var/run/postgresql", True),
        ("postgresql:///db", True),
        ("postgresql://u:p@10.0.0.5/db", False),
        ("postgresql://u:p@localhost.example.com/db", False),
        (NEON, False),
    ],
)
def test_what_counts_as_local(url: str, local: bool) -> None:
    assert (resolve(make_url(url), "app").first_remote() is None) is local


def test_a_local_host_prefers_tls_and_may_go_without(monkeypatch: pytest.MonkeyPatch) -> None:
    local = "postgresql://u:p@127.0.0.1:5432/db"
    assert engine_for(monkeypatch, local).url.query["sslmode"] == "prefer"
    assert engine_for(monkeypatch, local + "?sslmode=disable").url.query["sslmode"] == "disable"


@pytest.mark.parametrize(
    ("url", "pooler", "expected"),
    [
        (NEON_POOLER, "auto", True),
        (NEON, "auto", False),
        ("postgresql://u:p@127.0.0.1:6432/db", "auto", False),
        ("postgresql://u:p@127.0.0.1:6432/db", "pgbouncer", True),
        (NEON_POOLER, "none", False),
    ],
)
def test_the_pooler_is_recognised(
    monkeypatch: pytest.MonkeyPatch, url: str, pooler: str, expected: bool
) -> None:
    container = make_container(monkeypatch, url, DATABASE_POOLER=pooler)
    assert container.connection_plan().is_pooler is expected


def test_startup_settings_are_not_sent_to_the_pooler(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="unsupported startup parameter: options"):
        engine_for(monkeypatch, NEON_POOLER + "?options=-c%20statement_timeout%3D5000")
    # The direct host takes them, and Neon's SNI workaround passes the pooler.
    engine_for(monkeypatch, NEON + "?options=-c%20statement_timeout%3D5000")
    engine_for(monkeypatch, NEON_POOLER + "?options=endpoint%3Dep-cool-darkness-123456")


def test_sslrootcert_system_needs_libpq_16(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_container(monkeypatch, NEON + "?sslrootcert=system").settings()
    target = resolve(settings.url, "alex")
    sslmode = effective_sslmode(settings, target)
    with pytest.raises(ConfigurationError, match=r"libpq 16 or newer.*ca-certificates\.crt"):
        libpq_args(settings, target, sslmode, driver="psycopg2", libpq_version=150004, pooler=False)
    sync = libpq_args(
        settings, target, sslmode, driver="psycopg2", libpq_version=160000, pooler=False
    )
    assert sync.url.query["sslrootcert"] == "system"
    if libpq_version() >= 160000:  # the bundled libpq takes it as it is
        assert engine_for(monkeypatch, NEON + "?sslrootcert=system").url.query["sslrootcert"]


def test_pool_and_driver_options_are_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_for(
        monkeypatch,
        NEON,
        DATABASE_POOL_SIZE="4",
        DATABASE_MAX_OVERFLOW="2",
        DATABASE_POOL_TIMEOUT="7.5",
        DATABASE_POOL_RECYCLE="120",
        DATABASE_CONNECT_TIMEOUT="12",
        DATABASE_APPLICATION_NAME="billing",
    )
    pool = engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (4, 2, 7.5)  # type: ignore[attr-defined]
    assert pool._recycle == 120
    assert engine.url.query["connect_timeout"] == "12"
    assert engine.url.query["application_name"] == "billing"
    assert engine.hide_parameters is True
    echoing = engine_for(monkeypatch, NEON, DATABASE_ECHO="true")
    assert echoing.hide_parameters is False


@pytest.mark.parametrize(
    ("env", "every_checkout", "when_idle"),
    [
        ({}, False, True),  # the default: ping connections idle for over 30 s
        ({"DATABASE_PING_IDLE_AFTER": "0"}, True, False),  # SQLAlchemy's own: every checkout
        ({"DATABASE_POOL_PRE_PING": "false"}, False, False),
    ],
)
def test_pre_ping_modes(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], every_checkout: bool, when_idle: bool
) -> None:
    pool = engine_for(monkeypatch, NEON, **env).pool
    assert pool._pre_ping is every_checkout
    assert len(pool.dispatch.checkout) == int(when_idle)


def test_the_password_stays_out_of_reprs_and_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    container = make_container(monkeypatch, NEON, DATABASE_ECHO="true")
    engine = container.engine()
    for shown in (repr(engine), str(engine.url), repr(container.settings()), caplog.text):
        assert SECRET not in shown


@pytest.mark.parametrize("host", ["ep-cool-darkness-123456.us-east-2.aws.neon.tech", "127.0.0.1"])
def test_sslrootcert_system_means_verify_full_as_in_libpq(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    # libpq refuses any weaker sslmode with it ("weak sslmode ... may not be used").
    url = f"postgresql://u:p@{host}/db?sslrootcert=system"
    assert engine_for(monkeypatch, url).url.query["sslmode"] == "verify-full"
    with pytest.raises(ConfigurationError, match="allows with sslmode=verify-full only"):
        engine_for(monkeypatch, url, DATABASE_SSLMODE="require")
