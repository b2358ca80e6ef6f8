"""Row 7: generated DATABASE_URLs, settings and libpq PG* variables either configure the
engines or are refused by our ConfigurationError naming the setting; nothing else escapes; no
message, repr, log or health body holds a secret (the URL's password, `?password=`,
`?sslpassword=`, PGPASSWORD); and no driver may send plaintext to an address that is not local,
whether it is named by the URL's host, a host list, hostaddr, or PGHOST/PGHOSTADDR."""

import asyncio
import logging
import os
import re
import string
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import yaml
from dependency_injector import providers
from fastapi import FastAPI, Request
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from backend import Container
from backend.api.health import database_health
from backend.db.connection.plan import ConnectionPlan, plan_connection
from backend.db.container import DEFAULTS_FILE
from backend.settings import ConfigurationError, DatabaseSettings, load_settings
from tests.unit.drivers import libpq_addresses

ODD = "'\"#:@/%?&= {}$\\!*+,;[]~`^|<>\t\né€"
# A marker no other text here holds, so that finding the secret means it was shown, then the
# characters that break URLs and YAML.
passwords = st.builds(
    "S3cr3t{}".format, st.text(string.ascii_letters + string.digits + ODD, max_size=16)
).filter(lambda p: p.strip() == p)
SCHEMES = ["postgresql", "postgres", "postgresql+psycopg2", "postgresql+asyncpg", "mysql", ""]
USERS = ["neondb_owner", "app", "", "o'brien"]
HOSTS = [
    "ep-cool-darkness-123456.us-east-2.aws.neon.tech",
    "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech",
    "localhost",
    "127.0.0.1",
    "[::1]",
    "10.1.2.3",
    "",
    "localhost,192.0.2.2",  # a host list in the URL's own host field
    "LOCALHOST",
    "ep-cool-darkness-123456-POOLER.us-east-2.aws.neon.tech",
]
PORTS = ["", ":5432", ":0", ":99999", ":-1", ":port"]
DATABASES = ["neondb", "", "my db"]
# (parameter, value) pairs a pasted URL may carry, valid and not.
PARAMETERS = [
    *(("sslmode", mode) for mode in ["disable", "allow", "prefer", "require", "verify-ca"]),
    *(("sslmode", mode) for mode in ["verify-full", "bogus", ""]),
    *(("channel_binding", value) for value in ["require", "prefer", "disable"]),
    *(("connect_timeout", value) for value in ["0", "10", "-1", "soon", "1e3"]),
    *(("application_name", value) for value in ["billing", "", "x" * 64, "naïve app", "a&b=c"]),
    *(("sslrootcert", v) for v in ["system", "/etc/ssl/certs/ca-certificates.crt", "/nope.pem"]),
    ("options", "-c statement_timeout=5000"),
    ("options", "endpoint=ep-cool-darkness-123456"),
    *(("command_timeout", value) for value in ["30", "x"]),
    *(("statement_cache_size", value) for value in ["0", "100", "many"]),
    *(("target_session_attrs", value) for value in ["any", "read-write"]),
    ("gssencmode", "disable"),
    ("sslcert", "/nope.pem"),
]
# Where the connection goes: never in a test that connects (192.0.2.x is TEST-NET-1).
TARGETS = [
    *(("host", value) for value in ["/var/run/postgresql", "ep-x.neon.tech", "127.0.0.1"]),
    *(("host", value) for value in ["/nonexistent,192.0.2.2", "localhost:5433", "a,b,c"]),
    *(("hostaddr", value) for value in ["192.0.2.2", "127.0.0.1", "::1", "bogus", "127.0.0.1,"]),
    *(("port", value) for value in ["5432,5432", "99999", "0", "5433"]),
    ("user", "app"),
    ("dbname", "shop"),
    ("plugin", "x"),
    ("service", "prod"),
]
LOCAL = {"localhost", "127.0.0.1", "::1"}  # and unix sockets: what may get plaintext
KNOBS = [
    "echo", "pool_size", "max_overflow", "pool_timeout", "pool_recycle", "pool_pre_ping",
    "ping_idle_after", "connect_timeout", "connect_retries", "sslmode", "application_name",
    "allow_insecure", "pooler",
]  # fmt: skip
# Values a person types, values YAML reads as something else, and YAML's own punctuation.
VALUES = [
    *["0", "1", "5", "-1", "2.5", "1e3", "true", "false", "yes", "off", "null", "~", "", "[]"],
    *["{a: 1}", "'", '"', "#x", "a: b", "- x", "*alias", "&anchor", "!!python/none", "%"],
    *["require", "verify-full", "disable", "prefer", "auto", "pgbouncer", "none", "ten"],
]
SETTINGS = [(f"DATABASE_{knob.upper()}", value) for knob in KNOBS for value in VALUES]
# libpq's own variables, which psycopg2's libpq reads (and asyncpg some of).
LIBPQ_SETTINGS = [
    *(("PGHOST", value) for value in ["192.0.2.2", "127.0.0.1", "/run", "localhost,192.0.2.2"]),
    *(("PGHOSTADDR", value) for value in ["192.0.2.2", "127.0.0.1"]),
    *(("PGPORT", value) for value in ["5433", "0", "abc"]),
    *(("PGSSLMODE", value) for value in ["disable", "prefer", "require", "verify-full", "off"]),
    ("PGUSER", "app"),
    ("PGDATABASE", "shop"),
    ("PGOPTIONS", "-c jit=off"),
    ("PGSERVICE", "prod"),
    ("PGAPPNAME", "naïve"),
    ("PGCONNECT_TIMEOUT", "0"),
    ("PGSSLROOTCERT", "/nope.pem"),
    ("PGCHANNELBINDING", "require"),
]


QUERY_SECRETS = [(), ("password",), ("sslpassword",), ("password", "sslpassword")]


def url_parts(targets: bool) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(
        st.sampled_from(SCHEMES),
        st.sampled_from(USERS),
        passwords,
        st.booleans(),
        st.sampled_from(HOSTS if targets else ["127.0.0.1"]),
        st.sampled_from(PORTS if targets else [":1"]),
        st.sampled_from(DATABASES),
        st.lists(
            st.sampled_from(PARAMETERS + TARGETS if targets else PARAMETERS),
            max_size=4,
            unique_by=lambda pair: pair[0],
        ),
        st.sampled_from(QUERY_SECRETS),
    )


# Built once: a strategy made inside each draw costs hypothesis more than the test itself.
URL_PARTS = {True: url_parts(True), False: url_parts(False)}


@st.composite
def database_urls(draw: st.DrawFn, targets: bool = True) -> tuple[str, list[str]]:
    """A URL as a person might paste it, and the secrets in it: its password, and the
    `password=` and `sslpassword=` it may carry in its query (the password with a suffix:
    drawing more text would slow every example down)."""
    scheme, user, password, encoded, host, port, database, query, in_query = draw(
        URL_PARTS[targets]
    )
    secrets = [password]
    for name in in_query:
        secrets.append(f"{password}-{name}")
        query.append((name, secrets[-1]))
    secret = quote(password, safe="") if encoded else password
    rest = "?" + urlencode(query) if query else ""
    return f"{scheme}://{user}:{secret}@{host}{port}/{database}{rest}", secrets


environments = st.lists(st.sampled_from(SETTINGS), max_size=5, unique_by=lambda s: s[0]).map(dict)


PGPASSWORD = "PgPassw0rd-S3cr3t"
# PG* variables, PGPASSWORD among them at times: libpq's and asyncpg's to read, never shown.
libpq_environments = st.tuples(
    st.lists(st.sampled_from(LIBPQ_SETTINGS), max_size=3, unique_by=lambda s: s[0]), st.booleans()
).map(lambda drawn: {**dict(drawn[0]), **({"PGPASSWORD": PGPASSWORD} if drawn[1] else {})})


@contextmanager
def captured_logs() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def assert_hidden(secrets: str | list[str], *texts: str) -> None:
    for secret in [secrets] if isinstance(secrets, str) else secrets:
        for text in texts:
            assert secret not in text
            assert quote(secret, safe="") not in text
            assert quote_plus(secret) not in text


def assert_names_a_setting(error: ConfigurationError) -> None:
    assert re.search(r"DATABASE_|\bPG[A-Z_]+\b|config\.yml", str(error)), str(error)


def is_local(address: str) -> bool:
    return address.startswith("/") or address.lower() in LOCAL


def assert_no_plaintext_to_a_remote_address(plan: ConnectionPlan, env: dict[str, str]) -> None:
    """Independently of backend.db.connection.target: where would each driver go, and may it go
    there without TLS? libpq: by its documented rules over the keywords psycopg2 gets (PG* for what
    they leave out); asyncpg: its host list, or the URL's host."""
    if plan.settings.allow_insecure:
        return
    sync, target = plan.sync_driver, plan.async_driver
    arguments = {**PSYCOPG2.create_connect_args(sync.url)[1], **sync.connect_args}
    if arguments["sslmode"] in ("disable", "allow", "prefer"):
        addresses = libpq_addresses(arguments, env)
        assert all(is_local(host) for host, _ in addresses), (arguments, env)
    if target.connect_args["ssl"] in (False, "disable", "allow", "prefer"):
        hosts = target.connect_args.get("host") or [target.url.host or env.get("PGHOST", "/")]
        assert all(is_local(host) for host in hosts), (target, env)


PSYCOPG2 = create_engine("postgresql+psycopg2://").dialect  # for create_connect_args
OURS = ("DATABASE_", "PG")


@contextmanager
def environment(url: str, env: dict[str, str]) -> Iterator[None]:
    saved = {name: value for name, value in os.environ.items() if name.startswith(OURS)}
    for name in saved:
        del os.environ[name]
    os.environ.update({"DATABASE_URL": url, **env})
    try:
        yield
    finally:
        for name in [name for name in os.environ if name.startswith(OURS)]:
            del os.environ[name]
        os.environ.update(saved)


def parsed_config() -> providers.Configuration:
    """config.yml as Container() reads it: the same Configuration.from_yaml on the same file,
    with PyYAML's C parser. Its ${VAR}s are left for load_settings, so it is the same for every
    example and is parsed once; the variables are read by load_settings, as in Container()."""
    config = providers.Configuration()
    config.from_yaml(DEFAULTS_FILE, loader=yaml.CSafeLoader, envs_required=None)  # type: ignore[arg-type]
    return config


CONFIG = parsed_config()


def engine_config(url: str, env: dict[str, str]) -> tuple[DatabaseSettings, ConnectionPlan]:
    """What Container() makes of the environment, short of building the engines."""
    settings = load_settings(CONFIG.database())
    return settings, plan_connection(settings)


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        # Without the explain phase, whose line tracing (Python < 3.12) triples each example.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    )


@fuzz(10_000)
@given(database_urls(), environments, libpq_environments)
def test_every_configuration_is_built_or_refused_by_name(
    pasted: tuple[str, list[str]], env: dict[str, str], pg: dict[str, str]
) -> None:
    url, secrets = pasted
    with captured_logs() as logs, environment(url, {**env, **pg}):
        try:
            settings, plan = engine_config(url, env)
            assert_no_plaintext_to_a_remote_address(plan, pg)
            sync = plan.sync_driver.url
            shown = f"{settings!r} {settings} {sync!r} {sync} {plan.async_driver!r} {plan!r}"
        except ConfigurationError as error:  # the only error allowed to escape
            assert_names_a_setting(error)
            shown = f"{error} {error!r} {error.__cause__!r}"
    assert_hidden([*secrets, PGPASSWORD], shown, *(record.getMessage() for record in logs))


@fuzz(1_000)
@given(database_urls(), environments, libpq_environments)
def test_containers_build_both_engines_or_refuse_by_name(
    pasted: tuple[str, list[str]], env: dict[str, str], pg: dict[str, str]
) -> None:
    url, secrets = pasted
    with captured_logs() as logs, environment(url, {**env, **pg}):
        try:
            container = Container()
            engine, async_engine = container.engine(), container.async_engine()
            shown = [repr(engine), str(engine.url), repr(async_engine), repr(container.settings())]
        except ConfigurationError as error:  # the only error allowed to escape
            assert_names_a_setting(error)
            shown = [str(error), repr(error), repr(error.__cause__)]
    assert_hidden([*secrets, PGPASSWORD], *shown, *(record.getMessage() for record in logs))


@fuzz(200)
@given(database_urls(targets=False), environments)
def test_health_never_shows_the_password(
    pasted: tuple[str, list[str]], env: dict[str, str]
) -> None:
    # A database that refuses the connection (127.0.0.1:1, and nothing else: no TARGETS, no
    # PG* variables, which could point elsewhere): the health body is the driver's error.
    url, secrets = pasted
    env = {**env, "DATABASE_CONNECT_RETRIES": "0"}
    with captured_logs() as logs, environment(url, env):
        try:
            engine = Container().engine()
        except ConfigurationError:
            return
        request = Request({"type": "http", "app": FastAPI()})
        response = asyncio.run(database_health(request, engine=engine))
        engine.dispose()
    assert response.status_code == 503
    assert_hidden(secrets, bytes(response.body).decode())
    assert_hidden(secrets, *(record.getMessage() for record in logs))
