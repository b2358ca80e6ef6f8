"""DATABASE_URL as pasted → the URL both drivers get: refused where it would mislead a driver or
show a secret, its secret parameters taken out, and what it leaves out filled from libpq's PG*
variables as libpq would."""

from collections.abc import Mapping

from pydantic import SecretStr
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from backend.settings.environment import utf8
from backend.settings.errors import ConfigurationError

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
    # Both drivers read PGPASSWORD from the process themselves; taken here as well so that
    # one written in .env (backend/settings/dotenv.py), which they never see, counts too.
    "password": "PGPASSWORD",
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


def parse_url(raw: object) -> URL:
    if raw is None or raw == "":
        raise ConfigurationError(
            "DATABASE_URL is not set: give it your Neon connection string "
            "(postgresql://user:password@ep-….neon.tech/dbname?sslmode=require), "
            "or run `python -m backend` to start with an embedded PostgreSQL"
        )
    text = utf8("DATABASE_URL", str(raw)) or ""
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


def take_secrets(url: URL) -> tuple[URL, dict[str, SecretStr]]:
    """`?password=` becomes the URL's password, which SQLAlchemy masks wherever it shows a URL;
    the other secret parameters leave the URL. `user` and `dbname` take their URL places too,
    so that there is one place to read each from."""
    query = url.query
    # Repeated parameters were refused by parse_url: each value here is one string.
    if "password" in query:
        url = url.set(password=str(query["password"]))
    if "user" in query:
        url = url.set(username=str(query["user"]))
    if "dbname" in query:
        url = url.set(database=str(query["dbname"]))
    secrets = {name: SecretStr(str(query[name])) for name in SECRET_PARAMETERS[1:] if name in query}
    return url.difference_update_query({*SECRET_PARAMETERS, "user", "dbname"}), secrets


def libpq_defaults(url: URL, environ: Mapping[str, str]) -> tuple[URL, dict[str, str]]:
    """Fill what the URL leaves out from libpq's PG* variables, as libpq would."""
    if environ.get("PGSERVICE"):
        raise ConfigurationError(_NO_SERVICE.format("PGSERVICE"))
    given = {
        "host": url.host or "host" in url.query,
        "hostaddr": "hostaddr" in url.query,
        # SQLAlchemy's host=h:p form carries its own ports.
        "port": url.port is not None or "port" in url.query or _tuple(url.query.get("host")),
        "user": bool(url.username),
        "password": url.password is not None,
        "dbname": bool(url.database),
    }
    origins: dict[str, str] = {}
    for parameter, name in LIBPQ_VARIABLES.items():
        value = utf8(name, environ.get(name))
        if not value or given.get(parameter, parameter in url.query):
            continue
        origins[parameter] = name
        if parameter == "user":
            url = url.set(username=value)
        elif parameter == "password":
            url = url.set(password=value)
        elif parameter == "dbname":
            url = url.set(database=value)
        else:
            url = url.update_query_dict({parameter: value})
    return url, origins


def _tuple(value: object) -> bool:
    return isinstance(value, tuple)
