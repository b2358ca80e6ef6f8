"""Every DATABASE_* knob as one typed, validated model, with errors that name the variable.

What was set is read by `environment` (config files, ${VARIABLE:default}) and `dotenv` (the
.env file, under the process environment), DATABASE_URL is taken apart by `urls`, and the
errors are `errors`' (re-exported here, as is what other modules read of these).
"""

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy.engine import URL

from backend.settings.dotenv import with_env_file
from backend.settings.environment import MAPPING, kind_of, read_config_file, resolve
from backend.settings.errors import ConfigurationError, MissingDriver, NoDirectEndpoint
from backend.settings.urls import (
    LIBPQ_VARIABLES,
    SECRET_PARAMETERS,
    libpq_defaults,
    parse_url,
    take_secrets,
)

__all__ = [
    "LIBPQ_VARIABLES",
    "SECRET_PARAMETERS",
    "ConfigurationError",
    "DatabaseSettings",
    "MissingDriver",
    "NoDirectEndpoint",
    "load_settings",
    "naming",
    "read_config_file",
    "replica_errors",
    "replica_variable",
    "variable",
    "with_env_file",
]

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
PoolerMode = Literal["auto", "pgbouncer", "none"]
AsyncDriver = Literal["asyncpg", "psycopg"]
ReadFallback = Literal["primary", "fail"]

# libpq parameters a pasted URL may carry in its query. For these one rule holds: a DATABASE_*
# variable that is set wins, then the URL's query, then libpq's PG* variable, then config.yml's
# `url_query_defaults`.
URL_QUERY_KNOBS = ("sslmode", "connect_timeout", "application_name")


class DatabaseSettings(BaseModel):
    """The database settings; each field is its variable's name without the DATABASE_ prefix.

    A field's description says what it must be: it completes "DATABASE_X must be …".
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    # Without the URL_QUERY_KNOBS: those are resolved into the fields below. Without its secret
    # query parameters either (see `secrets`), and with libpq's PG* defaults filled in.
    url: URL
    # Read replicas (backend/db/reads/replicas.py): each DATABASE_READ_URL entry's own
    # settings, made by the same rules as DATABASE_URL's (TLS, pooler, libpq defaults, secrets).
    replicas: tuple["DatabaseSettings", ...] = ()
    # The direct endpoint's own settings (migrations, advisory locks, LISTEN), when a URL was
    # given for it, made by the same rules as DATABASE_URL's; `direct_variable` names where it
    # came from (DIRECT_VARIABLES). None: the connection plan derives it from DATABASE_URL.
    direct: "DatabaseSettings | None" = None
    direct_variable: str | None = None
    # A replica further behind than this many seconds takes no reads until it catches up.
    read_max_lag: float = Field(
        ge=0, allow_inf_nan=False, description="a number of seconds >= 0 (0: no bound)"
    )
    # How often, at most, a replica's lag is measured (one query, on a read's own connection).
    read_lag_check_interval: float = Field(
        gt=0, allow_inf_nan=False, description="a number of seconds > 0"
    )
    # Where reads go when no replica can take them.
    read_fallback: ReadFallback = Field(description="one of primary, fail")
    echo: bool = Field(description="true or false")
    pool_size: int = Field(ge=1, description="an integer >= 1")
    max_overflow: int = Field(ge=0, description="an integer >= 0")
    pool_timeout: float = Field(gt=0, allow_inf_nan=False, description="a number of seconds > 0")
    # -1 is SQLAlchemy's "never recycle".
    pool_recycle: int = Field(ge=-1, description="an integer number of seconds >= -1")
    pool_pre_ping: bool = Field(description="true or false")
    # With pre-ping on, only connections idle longer than this are pinged (0: every checkout).
    ping_idle_after: float = Field(
        ge=0, allow_inf_nan=False, description="a number of seconds >= 0"
    )
    # libpq reads whole seconds, and 0 would mean "wait forever" for a suspended Neon compute.
    connect_timeout: int = Field(ge=1, description="an integer number of seconds >= 1")
    # Failed connects worth retrying (refused, compute restarting) are tried this many more times.
    connect_retries: int = Field(ge=0, description="an integer >= 0")
    # None: not asked for, so the TLS policy of backend.db.connection.tls decides by host.
    sslmode: SslMode | None = Field(
        description="one of disable, allow, prefer, require, verify-ca, verify-full"
    )
    # PostgreSQL escapes any character that is not printable ASCII and cuts the name at 63
    # bytes; refusing is clearer than a silently different name in pg_stat_activity.
    application_name: str = Field(
        description="printable ASCII text of at most 63 characters (PostgreSQL escapes "
        "anything else and cuts the name at 63 bytes)"
    )
    allow_insecure: bool = Field(description="true or false")
    pooler: PoolerMode = Field(description="one of auto, pgbouncer, none")
    async_driver: AsyncDriver = Field(description="one of asyncpg, psycopg")
    # How long one call waits for the server's answer, client-side; 0: for ever.
    statement_timeout: float = Field(
        ge=0, allow_inf_nan=False, description="a number of seconds >= 0"
    )
    # A link silent this long is dead (keepalives, TCP_USER_TIMEOUT); 0: the OS's defaults.
    tcp_user_timeout: int = Field(ge=0, description="an integer number of seconds >= 0")
    # A request that waited longer than this for a pooled connection is logged as a warning.
    pool_wait_warning: float = Field(
        gt=0, allow_inf_nan=False, description="a number of seconds > 0"
    )
    # DATABASE_URL's secret query parameters (sslpassword, …), kept out of the URL so that no
    # repr, log line or error shows them; the drivers get them as connect arguments.
    secrets: Mapping[str, SecretStr] = Field(default_factory=dict)
    # Where each libpq parameter of `url` came from, when not from DATABASE_URL: {"host": "PGHOST"}.
    origins: Mapping[str, str] = Field(default_factory=dict, repr=False)
    # The read engines' pools (backend.db.engines.pool.pool_sizes); None: the same as the write
    # pool's.
    read_pool_size: int | None = Field(None, ge=1, description="an integer >= 1, or empty")
    read_max_overflow: int | None = Field(None, ge=0, description="an integer >= 0, or empty")

    @field_validator("application_name")
    @classmethod
    def _printable_ascii(cls, name: str) -> str:
        if len(name) > 63 or not all(" " <= character <= "~" for character in name):
            raise ValueError("not printable ASCII of at most 63 characters")
        return name

    def origin(self, parameter: str) -> str:
        """Where a URL parameter came from, for messages: `host in DATABASE_URL` or `PGHOST`."""
        return self.origins.get(parameter, f"{parameter} in DATABASE_URL")

    def secret(self, parameter: str) -> str | None:
        value = self.secrets.get(parameter)
        return None if value is None else value.get_secret_value()


def variable(field: str) -> str:
    return f"DATABASE_{field.upper()}"


def load_settings(
    config: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> DatabaseSettings:
    """Validate the `database` section of config.yml, its ${VARIABLE:default}s resolved.

    The variables are read here, from `environ` (by default os.environ over the .env file,
    backend/settings/dotenv.py), as the exact strings that were set: dependency-injector's own
    interpolation pastes a value into the YAML text before it is parsed, and YAML then reads
    010 as 8, '' as ', off as false and .inf as infinity. So the YAML is loaded with
    interpolation off, and each placeholder is resolved here, by its name.
    """
    if not config:
        raise ConfigurationError("config.yml has no `database` section")
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"config.yml: `database` {MAPPING}, got {kind_of(config)}")
    environ = with_env_file(os.environ) if environ is None else environ
    values = {name: resolve(value, environ) for name, value in config.items()}
    read_urls = values.pop("read_url", None)
    direct = _direct_url(values.pop("direct_url", None), values.pop("url_unpooled", None))
    query_defaults = values.pop("url_query_defaults", None) or {}
    if not isinstance(query_defaults, Mapping):
        raise ConfigurationError(
            f"config.yml: `database.url_query_defaults` {MAPPING}, got {kind_of(query_defaults)}"
        )
    url, secrets = take_secrets(parse_url(values.pop("url", None)))
    url, origins = libpq_defaults(url, environ)
    origin = {}
    for knob in URL_QUERY_KNOBS:
        if values.get(knob) is not None:
            origin[knob] = variable(knob)
        elif knob in url.query:
            values[knob] = url.query[knob]
            origin[knob] = origins.get(knob, f"{knob} in DATABASE_URL")
        else:
            values[knob] = query_defaults.get(knob)
            origin[knob] = f"url_query_defaults.{knob} in config.yml"
    values["url"] = url.difference_update_query(URL_QUERY_KNOBS)
    values["secrets"] = secrets
    values["origins"] = origins
    try:
        settings = DatabaseSettings.model_validate(values)
    except ValidationError as exc:
        problems = [_explain(error, origin) for error in exc.errors()]
        raise ConfigurationError("; ".join(problems)) from None
    update: dict[str, Any] = {}
    if read_urls is not None:
        update["replicas"] = _replicas(config, environ, str(read_urls))
    if direct is not None:
        update["direct"], update["direct_variable"] = _direct(config, environ, *direct)
    return settings.model_copy(update=update) if update else settings


READ_URL = "DATABASE_READ_URL"
# Where the direct endpoint's URL is read from, the first one set winning: the layer's own
# variable, then the one Neon's integrations (Vercel, Netlify, …) write beside DATABASE_URL.
DIRECT_VARIABLES = ("DATABASE_DIRECT_URL", "DATABASE_URL_UNPOOLED")


def _direct_url(direct: object, unpooled: object) -> tuple[str, str] | None:
    """The direct URL that was set, and the variable that set it: DATABASE_DIRECT_URL wins
    over DATABASE_URL_UNPOOLED, as a DATABASE_* variable wins over libpq's PG* one."""
    if direct is not None:
        return str(direct), DIRECT_VARIABLES[0]
    return None if unpooled is None else (str(unpooled), DIRECT_VARIABLES[1])


def _direct(
    config: Mapping[str, Any], environ: Mapping[str, str], url: str, where: str
) -> tuple[DatabaseSettings, str]:
    """The direct URL through DATABASE_URL's rules. DATABASE_POOLER describes DATABASE_URL's
    host, not this one: here only a -pooler host counts as a pooler (which the connection plan
    then refuses), so that a local PgBouncer as DATABASE_URL can have its server beside it."""
    with naming(where):
        return _another_url(config, environ, url, pooler="auto"), where


def _another_url(
    config: Mapping[str, Any], environ: Mapping[str, str], url: str, **settings: Any
) -> DatabaseSettings:
    """A replica's or the direct URL through DATABASE_URL's rules, with no replicas or direct
    URL of its own."""
    own = {**config, **settings, "url": url, "read_url": None}
    return load_settings(own | {"direct_url": None, "url_unpooled": None}, environ)


def _replicas(
    config: Mapping[str, Any], environ: Mapping[str, str], read_urls: str
) -> tuple[DatabaseSettings, ...]:
    """Each URL in DATABASE_READ_URL, through the very rules DATABASE_URL goes through.

    The URLs are separated by whitespace (spaces, tabs, line breaks): a URL holds none
    unencoded (RFC 3986), where a comma may stand in a password and separates libpq's host
    lists, so whitespace is the one separator no URL can contain.
    """
    urls = read_urls.split()
    replicas = []
    for position, url in enumerate(urls, 1):
        with replica_errors(position, len(urls)):
            replicas.append(_another_url(config, environ, url))
    return tuple(replicas)


def replica_variable(position: int, count: int) -> str:
    """How messages name one replica's URL: DATABASE_READ_URL, or which of its URLs."""
    return READ_URL if count == 1 else f"{READ_URL} (URL {position} of {count})"


@contextmanager
def naming(where: str) -> Iterator[None]:
    """Another URL goes through DATABASE_URL's rules, whose messages name DATABASE_URL: name
    that URL's variable instead (the messages hold no secret, only the variable's name)."""
    try:
        yield
    except ConfigurationError as error:
        raise ConfigurationError(re.sub(r"\bDATABASE_URL\b", where, str(error))) from None


@contextmanager
def replica_errors(position: int, count: int) -> Iterator[None]:
    """A replica's URL, named in the messages of DATABASE_URL's rules."""
    try:
        with naming(replica_variable(position, count)):
            yield
    except ConfigurationError as error:
        message = str(error)
        if count > 1 and "is not a valid URL" in message:
            message += (
                f"; the URLs in {READ_URL} are separated by whitespace, so a space in a "
                "password must be percent-encoded (%20)"
            )
        raise ConfigurationError(message) from None


def _explain(error: Mapping[str, Any], origin: Mapping[str, str]) -> str:
    name = str(error["loc"][0]) if error["loc"] else "database"
    field = DatabaseSettings.model_fields.get(name)
    if field is None:
        return f"config.yml: unknown setting database.{name}"
    return f"{origin.get(name, variable(name))} must be {field.description}, got {error['input']!r}"
