"""Row 7: generated DATABASE_URLs and settings either configure the engines or are refused by
our ConfigurationError; nothing else escapes, and no message, repr, log or health body holds
the password."""

import logging
import os
import string
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlencode

import yaml
from dependency_injector import providers
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg2.extensions import libpq_version

from backend.api.health import database_health
from backend.container import CONFIG_FILE, Container
from backend.db.url import asyncpg_target, psycopg2_url
from backend.settings import ConfigurationError, load_settings

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
]
PORTS = ["", ":5432", ":0", ":99999", ":port"]
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
    *(("host", value) for value in ["/var/run/postgresql", "ep-x.neon.tech"]),
]
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


@st.composite
def database_urls(draw: st.DrawFn) -> tuple[str, str]:
    """A URL as a person might paste it, and the password in it."""
    scheme, user, password, encoded, host, port, database, query = draw(
        st.tuples(
            st.sampled_from(SCHEMES),
            st.sampled_from(USERS),
            passwords,
            st.booleans(),
            st.sampled_from(HOSTS),
            st.sampled_from(PORTS),
            st.sampled_from(DATABASES),
            st.lists(st.sampled_from(PARAMETERS), max_size=4, unique_by=lambda pair: pair[0]),
        )
    )
    secret = quote(password, safe="") if encoded else password
    rest = "?" + urlencode(query) if query else ""
    return f"{scheme}://{user}:{secret}@{host}{port}/{database}{rest}", password


environments = st.lists(st.sampled_from(SETTINGS), max_size=5, unique_by=lambda s: s[0]).map(dict)


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


def assert_hidden(password: str, *texts: str) -> None:
    for text in texts:
        assert password not in text
        assert quote(password, safe="") not in text


@contextmanager
def environment(url: str, env: dict[str, str]) -> Iterator[None]:
    saved = {name: value for name, value in os.environ.items() if name.startswith("DATABASE_")}
    for name in saved:
        del os.environ[name]
    os.environ.update({"DATABASE_URL": url, **env})
    try:
        yield
    finally:
        for name in [name for name in os.environ if name.startswith("DATABASE_")]:
            del os.environ[name]
        os.environ.update(saved)


def engine_config(url: str, env: dict[str, str]) -> object:
    """What Container() makes of the environment, short of building the engines.

    The same Configuration.from_yaml on the same file; only its YAML parser is the C one
    (dependency-injector's loader is PyYAML's pure-Python SafeLoader: 1.5 ms a parse, 0.1 ms in
    C). A parse error is what Container() turns into ConfigurationError, as the next property
    checks through Container() itself.
    """
    config = providers.Configuration()
    try:
        config.from_yaml(CONFIG_FILE, loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        raise ConfigurationError("config.yml is not valid YAML") from None
    settings = load_settings(config.database())
    return psycopg2_url(settings, libpq_version()), asyncpg_target(settings)


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        # Without the explain phase, whose line tracing (Python < 3.12) triples each example.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    )


@fuzz(10_000)
@given(database_urls(), environments)
def test_every_configuration_is_built_or_refused_by_name(
    pasted: tuple[str, str], env: dict[str, str]
) -> None:
    url, password = pasted
    with captured_logs() as logs, environment(url, env):
        try:
            shown = repr(engine_config(url, env))
        except ConfigurationError as error:  # the only error allowed to escape
            shown = f"{error} {error!r} {error.__cause__!r}"
    assert_hidden(password, shown, *(record.getMessage() for record in logs))


@fuzz(1_000)
@given(database_urls(), environments)
def test_containers_build_both_engines_or_refuse_by_name(
    pasted: tuple[str, str], env: dict[str, str]
) -> None:
    url, password = pasted
    with captured_logs() as logs, environment(url, env):
        try:
            container = Container()
            engine, async_engine = container.engine(), container.async_engine()
            shown = [repr(engine), str(engine.url), repr(async_engine), repr(container.settings())]
        except ConfigurationError as error:  # the only error allowed to escape
            shown = [str(error), repr(error), repr(error.__cause__)]
    assert_hidden(password, *shown, *(record.getMessage() for record in logs))


@fuzz(200)
@given(passwords, st.sampled_from(PARAMETERS), environments)
def test_health_never_shows_the_password(
    password: str, parameter: tuple[str, str], env: dict[str, str]
) -> None:
    # A database that refuses the connection: the health body is the driver's error.
    url = f"postgresql://app:{quote(password, safe='')}@127.0.0.1:1/neondb?{urlencode([parameter])}"
    env = {**env, "DATABASE_CONNECT_RETRIES": "0"}
    with captured_logs() as logs, environment(url, env):
        try:
            engine = Container().engine()
        except ConfigurationError:
            return
        response = database_health(engine=engine)
        engine.dispose()
    assert response.status_code == 503
    assert_hidden(password, bytes(response.body).decode())
    assert_hidden(password, *(record.getMessage() for record in logs))
