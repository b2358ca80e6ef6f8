"""Every DATABASE_* knob as one typed, validated model, with errors that name the variable."""

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
PoolerMode = Literal["auto", "pgbouncer", "none"]
ReadFallback = Literal["primary", "fail"]

# libpq parameters a pasted URL may carry in its query. For these one rule holds: a DATABASE_*
# variable that is set wins, then the URL's query, then libpq's PG* variable, then config.yml's
# `url_query_defaults`.
URL_QUERY_KNOBS = ("sslmode", "connect_timeout", "application_name")

# libpq fills each parameter a URL leaves out from its environment variable (psycopg2 does
# whatever libpq does), and asyncpg reads some of the same variables but not all, nor in the
# same way (it knows no PGHOSTADDR). So they are read here, once, into the URL, and both drivers
# are given the result explicitly: both reach the same server, and the TLS rule sees every
# address either would connect to.
LIBPQ_VARIABLES = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "dbname": "PGDATABASE",
    "options": "PGOPTIONS",
    "sslmode": "PGSSLMODE",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "channel_binding": "PGCHANNELBINDING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}

# Query parameters that hold a secret: never left in a URL that gets rendered. libpq 18 adds
# oauth_client_secret; the libpq of psycopg2-binary does not know it yet.
SECRET_PARAMETERS = ("password", "sslpassword", "oauth_client_secret")


class ConfigurationError(ValueError):
    """A setting is missing or invalid. The message names the setting and never holds a secret."""


class MissingDriver(ConfigurationError):
    """The async path was asked for where its driver is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "the async engine needs asyncpg, which is not installed: "
            "pip install 'fastapi-sqlmodel-neon[asyncpg]'"
        )


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
    # None: not asked for, so the TLS policy of backend.db.connection.url decides by host.
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

    The variables are read here, from `environ` (os.environ by default), as the exact strings
    that were set: dependency-injector's own interpolation pastes a value into the YAML text
    before it is parsed, and YAML then reads 010 as 8, '' as ', off as false and .inf as
    infinity. So the YAML is loaded with interpolation off, and each placeholder is resolved
    here, by its name.
    """
    if not config:
        raise ConfigurationError("config.yml has no `database` section")
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"config.yml: `database` {MAPPING}, got {_kind(config)}")
    environ = os.environ if environ is None else environ
    values = {name: _resolve(value, environ) for name, value in config.items()}
    read_urls = values.pop("read_url", None)
    query_defaults = values.pop("url_query_defaults", None) or {}
    if not isinstance(query_defaults, Mapping):
        raise ConfigurationError(
            f"config.yml: `database.url_query_defaults` {MAPPING}, got {_kind(query_defaults)}"
        )
    url, secrets = _take_secrets(_parse_url(values.pop("url", None)))
    url, origins = _libpq_defaults(url, environ)
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
    if read_urls is None:
        return settings
    return settings.model_copy(update={"replicas": _replicas(config, environ, str(read_urls))})


READ_URL = "DATABASE_READ_URL"


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
            replicas.append(load_settings({**config, "url": url, "read_url": None}, environ))
    return tuple(replicas)


def replica_variable(position: int, count: int) -> str:
    """How messages name one replica's URL: DATABASE_READ_URL, or which of its URLs."""
    return READ_URL if count == 1 else f"{READ_URL} (URL {position} of {count})"


@contextmanager
def replica_errors(position: int, count: int) -> Iterator[None]:
    """A replica's URL goes through DATABASE_URL's rules, whose messages name DATABASE_URL:
    name the replica's URL instead (the messages hold no secret, only the variable's name)."""
    try:
        yield
    except ConfigurationError as error:
        where = replica_variable(position, count)
        message = re.sub(r"\bDATABASE_URL\b", where, str(error))
        if count > 1 and "is not a valid URL" in message:
            message += (
                f"; the URLs in {READ_URL} are separated by whitespace, so a space in a "
                "password must be percent-encoded (%20)"
            )
        raise ConfigurationError(message) from None


PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<default>.*))?\}", re.S)


MAPPING = "must be a mapping of settings (name: value lines indented under it)"


def _kind(value: object) -> str:
    """A YAML value's kind, for messages: never the value, which may hold a password."""
    kinds = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return kinds.get(type(value), type(value).__name__)


def _resolve(value: Any, environ: Mapping[str, str]) -> Any:
    """`${NAME:default}`: the variable's exact string when set and not empty (an empty one
    counts as unset, as in docker-compose's `X: ${X}`), else the default; '' is no value."""
    match = PLACEHOLDER.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return value
    resolved = _utf8(match["name"], environ.get(match["name"])) or match["default"] or ""
    return resolved if resolved != "" else None


def _utf8(name: str, value: str | None) -> str | None:
    """A variable's value, refused if it holds bytes that are not UTF-8.

    Python keeps such a byte as a lone surrogate, which no driver, URL or log line can encode:
    it would fail later, as a traceback, wherever the value is first written out.
    """
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError(
                f"{name} holds a byte that is not UTF-8 text: set it as UTF-8 (in a URL, "
                "percent-encode such a byte, e.g. %FF)"
            ) from None
    return value


def _parse_url(raw: object) -> URL:
    if raw is None or raw == "":
        raise ConfigurationError(
            "DATABASE_URL is not set: give it your Neon connection string "
            "(postgresql://user:password@ep-….neon.tech/dbname?sslmode=require), "
            "or run `python -m backend` to start with an embedded PostgreSQL"
        )
    text = _utf8("DATABASE_URL", str(raw)) or ""
    if text != text.strip() or any(ord(c) < 32 or ord(c) == 127 for c in text):
        # A secret file's trailing newline would otherwise end up in the database name.
        raise ConfigurationError(
            "DATABASE_URL holds a line break, a control character, or spaces at either end: "
            "remove them (percent-encode one that belongs to the password, e.g. %0A)"
        )
    if text.count("@") > 1:
        # SQLAlchemy ends the password at its first '@' and reads the rest as the host, where
        # it would be shown in every repr and connection error.
        raise ConfigurationError(
            "DATABASE_URL holds more than one '@': percent-encode any '@' in the user name or "
            "password as %40"
        )
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # SQLAlchemy's message quotes the whole string, password included.
        raise ConfigurationError(
            "DATABASE_URL is not a valid URL: expected postgresql://user:password@host/dbname"
        ) from None
    for name, value in url.query.items():
        # SQLAlchemy's own `host=h1:p1&host=h2:p2` is the one parameter that may repeat; libpq
        # would take the last of any other, psycopg2 would be handed a tuple.
        if isinstance(value, tuple) and name != "host":
            raise ConfigurationError(f"{name} appears more than once in DATABASE_URL")
    if "plugin" in url.query:
        # SQLAlchemy loads the named entry point into the process before anything else.
        raise ConfigurationError(
            "plugin in DATABASE_URL names a SQLAlchemy plugin, which this layer does not load: "
            "remove it"
        )
    if "service" in url.query:
        raise ConfigurationError(_NO_SERVICE.format("service in DATABASE_URL"))
    return url


_NO_SERVICE = (
    "{} names a pg_service.conf entry, which psycopg2 (libpq) reads and asyncpg does not, so "
    "the two engines would reach different servers: put its parameters in DATABASE_URL"
)


def _take_secrets(url: URL) -> tuple[URL, dict[str, SecretStr]]:
    """`?password=` becomes the URL's password, which SQLAlchemy masks wherever it shows a URL;
    the other secret parameters leave the URL. `user` and `dbname` take their URL places too,
    so that there is one place to read each from."""
    query = url.query
    # Repeated parameters were refused by _parse_url: each value here is one string.
    if "password" in query:
        url = url.set(password=str(query["password"]))
    if "user" in query:
        url = url.set(username=str(query["user"]))
    if "dbname" in query:
        url = url.set(database=str(query["dbname"]))
    secrets = {name: SecretStr(str(query[name])) for name in SECRET_PARAMETERS[1:] if name in query}
    return url.difference_update_query({*SECRET_PARAMETERS, "user", "dbname"}), secrets


def _libpq_defaults(url: URL, environ: Mapping[str, str]) -> tuple[URL, dict[str, str]]:
    """Fill what the URL leaves out from libpq's PG* variables, as libpq would."""
    if environ.get("PGSERVICE"):
        raise ConfigurationError(_NO_SERVICE.format("PGSERVICE"))
    given = {
        "host": url.host or "host" in url.query,
        "hostaddr": "hostaddr" in url.query,
        # SQLAlchemy's host=h:p form carries its own ports.
        "port": url.port is not None or "port" in url.query or _tuple(url.query.get("host")),
        "user": bool(url.username),
        "dbname": bool(url.database),
    }
    origins: dict[str, str] = {}
    for parameter, name in LIBPQ_VARIABLES.items():
        value = _utf8(name, environ.get(name))
        if not value or given.get(parameter, parameter in url.query):
            continue
        origins[parameter] = name
        if parameter == "user":
            url = url.set(username=value)
        elif parameter == "dbname":
            url = url.set(database=value)
        else:
            url = url.update_query_dict({parameter: value})
    return url, origins


def _tuple(value: object) -> bool:
    return isinstance(value, tuple)


def _explain(error: Mapping[str, Any], origin: Mapping[str, str]) -> str:
    name = str(error["loc"][0]) if error["loc"] else "database"
    field = DatabaseSettings.model_fields.get(name)
    if field is None:
        return f"config.yml: unknown setting database.{name}"
    return f"{origin.get(name, variable(name))} must be {field.description}, got {error['input']!r}"


def read_config_file(own: str | Path) -> dict[str, Any]:
    """A service's own YAML, checked for the shape config.yml has before it is merged over the
    defaults: a list or a string where a mapping belongs would fail later, as a traceback."""
    where = f"BACKEND_CONFIG / config_file {own}"
    try:
        # Read here, not by from_yaml: its text is decoded as UTF-8 whatever the locale, and a
        # file that is not would otherwise end in a UnicodeDecodeError.
        text = Path(own).read_bytes().decode("utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ConfigurationError(f"{where} is not UTF-8 text: save it as UTF-8") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{where} cannot be read as YAML: {type(exc).__name__}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where}: the file {MAPPING}, got {_kind(data)}")
    database = data.get("database")
    if database is not None and not isinstance(database, dict):
        raise ConfigurationError(f"{where}: `database` {MAPPING}, got {_kind(database)}")
    defaults = (database or {}).get("url_query_defaults")
    if defaults is not None and not isinstance(defaults, dict):
        raise ConfigurationError(
            f"{where}: `database.url_query_defaults` {MAPPING}, got {_kind(defaults)}"
        )
    return data
