"""Every DATABASE_* knob as one typed, validated model, with errors that name the variable."""

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
PoolerMode = Literal["auto", "pgbouncer", "none"]

# libpq parameters a pasted URL may carry in its query. For these one rule holds: a DATABASE_*
# variable that is set wins, then the URL's query, then config.yml's `url_query_defaults`.
URL_QUERY_KNOBS = ("sslmode", "connect_timeout", "application_name")


class ConfigurationError(ValueError):
    """A setting is missing or invalid. The message names the setting and never holds a secret."""


class DatabaseSettings(BaseModel):
    """The database settings; each field is its variable's name without the DATABASE_ prefix.

    A field's description says what it must be: it completes "DATABASE_X must be …".
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    # Without the URL_QUERY_KNOBS: those are resolved into the fields below.
    url: URL
    echo: bool = Field(description="true or false")
    pool_size: int = Field(ge=1, description="an integer >= 1")
    max_overflow: int = Field(ge=0, description="an integer >= 0")
    pool_timeout: float = Field(gt=0, description="a number of seconds > 0")
    # -1 is SQLAlchemy's "never recycle".
    pool_recycle: int = Field(ge=-1, description="an integer number of seconds >= -1")
    pool_pre_ping: bool = Field(description="true or false")
    # With pre-ping on, only connections idle longer than this are pinged (0: every checkout).
    ping_idle_after: float = Field(ge=0, description="a number of seconds >= 0")
    # libpq reads whole seconds, and 0 would mean "wait forever" for a suspended Neon compute.
    connect_timeout: int = Field(ge=1, description="an integer number of seconds >= 1")
    # Failed connects worth retrying (refused, compute restarting) are tried this many more times.
    connect_retries: int = Field(ge=0, description="an integer >= 0")
    # None: not asked for, so the TLS policy of backend.db.url decides by host.
    sslmode: SslMode | None = Field(
        description="one of disable, allow, prefer, require, verify-ca, verify-full"
    )
    # PostgreSQL truncates names to 63 bytes; refusing is clearer than a silent cut.
    application_name: str = Field(max_length=63, description="a text of at most 63 characters")
    allow_insecure: bool = Field(description="true or false")
    pooler: PoolerMode = Field(description="one of auto, pgbouncer, none")
    # How long one call waits for the server's answer, client-side; 0: for ever.
    statement_timeout: float = Field(
        ge=0, allow_inf_nan=False, description="a number of seconds >= 0"
    )
    # A link silent this long is dead (keepalives, TCP_USER_TIMEOUT); 0: the OS's defaults.
    tcp_user_timeout: int = Field(ge=0, description="an integer number of seconds >= 0")


def variable(field: str) -> str:
    return f"DATABASE_{field.upper()}"


def load_settings(config: Mapping[str, Any] | None) -> DatabaseSettings:
    """Validate the `database` section of the configuration (config.yml after interpolation)."""
    if not config:
        raise ConfigurationError("config.yml has no `database` section")
    values = dict(config)
    query_defaults = values.pop("url_query_defaults", None) or {}
    url = _parse_url(values.pop("url", None))
    origin = {}
    for knob in URL_QUERY_KNOBS:
        if values.get(knob) is not None:
            origin[knob] = variable(knob)
        elif knob in url.query:
            values[knob] = url.query[knob]
            origin[knob] = f"{knob} in DATABASE_URL"
        else:
            values[knob] = query_defaults.get(knob)
            origin[knob] = f"url_query_defaults.{knob} in config.yml"
    values["url"] = url.difference_update_query(URL_QUERY_KNOBS)
    try:
        return DatabaseSettings.model_validate(values)
    except ValidationError as exc:
        problems = [_explain(error, origin) for error in exc.errors()]
        raise ConfigurationError("; ".join(problems)) from None


def _parse_url(raw: object) -> URL:
    if raw is None or raw == "":
        raise ConfigurationError(
            "DATABASE_URL is not set: give it your Neon connection string "
            "(postgresql://user:password@ep-….neon.tech/dbname?sslmode=require), "
            "or run `python -m backend` to start with an embedded PostgreSQL"
        )
    if str(raw).count("@") > 1:
        # SQLAlchemy ends the password at its first '@' and reads the rest as the host, where
        # it would be shown in every repr and connection error.
        raise ConfigurationError(
            "DATABASE_URL holds more than one '@': percent-encode any '@' in the user name or "
            "password as %40"
        )
    try:
        return make_url(str(raw))
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # SQLAlchemy's message quotes the whole string, password included.
        raise ConfigurationError(
            "DATABASE_URL is not a valid URL: expected postgresql://user:password@host/dbname"
        ) from None


def _explain(error: Mapping[str, Any], origin: Mapping[str, str]) -> str:
    name = str(error["loc"][0]) if error["loc"] else "database"
    field = DatabaseSettings.model_fields.get(name)
    if field is None:
        return f"config.yml: unknown setting database.{name}"
    return f"{origin.get(name, variable(name))} must be {field.description}, got {error['input']!r}"
