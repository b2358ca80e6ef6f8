"""Configuration: config.yml defaults, DATABASE_* variables on top, named errors for bad values."""

import pytest

from backend import Container
from backend.settings import ConfigurationError

NEON = "postgresql://alex:AbC123dEf@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb"
SECRET = "AbC123dEf"


def make_container(monkeypatch: pytest.MonkeyPatch, url: str = NEON, **env: str) -> Container:
    monkeypatch.setenv("DATABASE_URL", url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Container()


def test_config_yml_supplies_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_container(monkeypatch).settings()
    assert (settings.pool_size, settings.max_overflow, settings.pool_timeout) == (5, 5, 30)
    assert (settings.pool_recycle, settings.pool_pre_ping, settings.echo) == (240, True, False)
    assert settings.ping_idle_after == 30
    assert (settings.connect_timeout, settings.application_name) == (10, "backend")
    assert settings.sslmode is None
    assert settings.allow_insecure is False


def test_a_set_variable_wins_over_config_yml(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(
        monkeypatch, DATABASE_POOL_SIZE="7", DATABASE_POOL_PRE_PING="false", DATABASE_ECHO="true"
    )
    assert container.settings().pool_size == 7
    engine = container.engine()
    assert engine.pool.size() == 7  # type: ignore[attr-defined]
    assert engine.pool._pre_ping is False
    assert engine.echo is True


def test_every_container_reads_the_environment_of_its_making(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = make_container(monkeypatch, DATABASE_POOL_SIZE="3").engine()
    second = make_container(monkeypatch, NEON.replace("neondb", "otherdb")).engine()
    assert first is not second
    assert first.url.database == "neondb"
    assert second.url.database == "otherdb"


@pytest.mark.parametrize(
    ("knob", "in_url", "variable", "expected"),
    [
        ("sslmode", None, None, None),
        ("sslmode", "verify-ca", None, "verify-ca"),
        ("sslmode", "require", "verify-full", "verify-full"),
        ("connect_timeout", None, None, 10),
        ("connect_timeout", "15", None, 15),
        ("connect_timeout", "15", "3", 3),
        ("application_name", None, None, "backend"),
        ("application_name", "from-url", None, "from-url"),
        ("application_name", "from-url", "from-env", "from-env"),
    ],
)
def test_variable_beats_url_query_beats_config_yml(
    monkeypatch: pytest.MonkeyPatch,
    knob: str,
    in_url: str | None,
    variable: str | None,
    expected: object,
) -> None:
    url = f"{NEON}?{knob}={in_url}" if in_url else NEON
    env = {f"DATABASE_{knob.upper()}": variable} if variable else {}
    settings = make_container(monkeypatch, url, **env).settings()
    assert getattr(settings, knob) == expected
    assert knob not in settings.url.query  # one source of truth: the field


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_POOL_SIZE", "ten", "DATABASE_POOL_SIZE must be an integer >= 1, got 'ten'"),
        ("DATABASE_POOL_SIZE", "0", "DATABASE_POOL_SIZE must be an integer >= 1, got '0'"),
        ("DATABASE_MAX_OVERFLOW", "-1", "DATABASE_MAX_OVERFLOW must be an integer >= 0, got '-1'"),
        ("DATABASE_POOL_TIMEOUT", "soon", "DATABASE_POOL_TIMEOUT must be a number of seconds > 0"),
        ("DATABASE_POOL_RECYCLE", "-5", "DATABASE_POOL_RECYCLE must be an integer number of"),
        ("DATABASE_POOL_PRE_PING", "maybe", "DATABASE_POOL_PRE_PING must be true or false"),
        ("DATABASE_ECHO", "loud", "DATABASE_ECHO must be true or false, got 'loud'"),
        ("DATABASE_CONNECT_TIMEOUT", "0", "DATABASE_CONNECT_TIMEOUT must be an integer number"),
        ("DATABASE_SSLMODE", "bogus", "DATABASE_SSLMODE must be one of disable, allow, prefer"),
        ("DATABASE_APPLICATION_NAME", "x" * 64, "DATABASE_APPLICATION_NAME must be printable"),
        ("DATABASE_ALLOW_INSECURE", "perhaps", "DATABASE_ALLOW_INSECURE must be true or false"),
        ("DATABASE_POOLER", "sometimes", "DATABASE_POOLER must be one of auto, pgbouncer, none"),
    ],
)
def test_a_bad_value_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    container = make_container(monkeypatch, **{variable: value})
    with pytest.raises(ConfigurationError, match="^" + message.replace("(", r"\(")) as error:
        container.engine()
    assert SECRET not in str(error.value)


def test_a_bad_value_in_the_url_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(monkeypatch, f"{NEON}?connect_timeout=never")
    with pytest.raises(ConfigurationError, match=r"^connect_timeout in DATABASE_URL must be an"):
        container.engine()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "DATABASE_URL is not set"),
        (f"not a url {SECRET}", "DATABASE_URL is not a valid URL"),
        (f"mysql://alex:{SECRET}@db.example.com/app", "must be a PostgreSQL URL"),
        (f"postgresql://alex:{SECRET}@ep-a.neon.tech/db?sslmode=disable", "sslmode=disable"),
        # Found by the property tests: SQLAlchemy would read "{SECRET}" as part of the host.
        (f"postgresql://alex:p@{SECRET}@ep-a.neon.tech/db", "more than one '@'"),
        (f"postgresql://alex:{SECRET}@ep-a.neon.tech:port/db", "not a valid URL"),
    ],
)
def test_a_bad_url_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        make_container(monkeypatch, url).engine()
    assert SECRET not in str(error.value)
    assert SECRET not in repr(error.value)
    assert error.value.__cause__ is None  # no chained driver/parser error carrying the URL


def test_an_unset_url_leaves_importing_and_building_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    container = Container()  # reads config, validates nothing yet, connects to nothing
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not set"):
        container.engine()


# Issue 9, item 11: dependency-injector pasted ${VAR} into config.yml's text before YAML parsed
# it, so a value was changed before anything could validate it.
def test_values_reach_validation_as_the_strings_that_were_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quoted = (
        "postgresql://alex:it''s%20AbC123dEf@ep-cool-darkness-123456.us-east-2.aws.neon.tech/db"
    )
    settings = make_container(monkeypatch, quoted, DATABASE_POOL_SIZE="010").settings()
    assert settings.pool_size == 10  # YAML read 010 as octal: 8
    assert settings.url.password == f"it''s {SECRET}"  # YAML read '' as '


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        # YAML read off as false: "got False", for a value nobody typed.
        ("DATABASE_SSLMODE", "off", "DATABASE_SSLMODE must be one of disable, allow, prefer, "
         "require, verify-ca, verify-full, got 'off'"),
        ("DATABASE_POOL_TIMEOUT", ".inf", "DATABASE_POOL_TIMEOUT must be a number of seconds"),
        ("DATABASE_POOL_TIMEOUT", "inf", "DATABASE_POOL_TIMEOUT must be a number of seconds"),
        ("DATABASE_PING_IDLE_AFTER", "nan", "DATABASE_PING_IDLE_AFTER must be a number of"),
        # 21 characters, 63 bytes: PostgreSQL would escape them and cut the name.
        ("DATABASE_APPLICATION_NAME", "€" * 21, "DATABASE_APPLICATION_NAME must be printable"),
        ("DATABASE_APPLICATION_NAME", "naïve", "DATABASE_APPLICATION_NAME must be printable"),
    ],
)  # fmt: skip
def test_values_yaml_used_to_change_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match="^" + message) as error:
        make_container(monkeypatch, **{variable: value}).settings()
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("ending", ["\n", "\r\n", " ", "\t"])
def test_a_url_with_a_trailing_newline_is_refused(
    monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    # As a secret file's content often ends: YAML folded it into the database name.
    with pytest.raises(ConfigurationError, match="DATABASE_URL holds a line break") as error:
        make_container(monkeypatch, NEON + ending).settings()
    assert SECRET not in str(error.value)


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_container(
        monkeypatch, DATABASE_POOL_SIZE="", DATABASE_SSLMODE="", DATABASE_APPLICATION_NAME=""
    ).settings()
    assert (settings.pool_size, settings.sslmode, settings.application_name) == (5, None, "backend")


def test_libpq_variables_come_after_the_url_and_before_config_yml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGAPPNAME", "from-libpq")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "20")
    settings = make_container(monkeypatch, NEON + "?connect_timeout=15").settings()
    assert (settings.sslmode, settings.application_name) == ("verify-full", "from-libpq")
    assert settings.connect_timeout == 15
    monkeypatch.setenv("PGSSLMODE", "bogus")
    with pytest.raises(ConfigurationError, match=r"^PGSSLMODE must be one of"):
        make_container(monkeypatch).settings()
