"""Pure rules on a database URL: driver scheme, Neon's pooler, libpq → psycopg2 and asyncpg.

Each takes values already resolved by the plan (backend.db.connection.plan): the target
(target.py), the sslmode (tls.py), asyncpg's `ssl` argument. No I/O.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ssl import SSLContext
from types import MappingProxyType
from typing import Any

from sqlalchemy.engine import URL

from backend.db.connection.target import Target
from backend.db.connection.tls import TLS_FILES
from backend.settings import ConfigurationError, DatabaseSettings

# Where the target lives in a URL's query; both drivers get it from
# backend.db.connection.target instead.
TARGET_PARAMETERS = frozenset({"host", "hostaddr", "port"})


@dataclass(frozen=True)
class DriverArgs:
    """What one driver is handed: its URL, its connect() arguments (read-only: copy to change),
    the URL's parameters it has no word for, and what its engine logs about those."""

    url: URL
    # Not in the repr: psycopg2's hold DATABASE_URL's secret parameters (the URL's repr hides
    # its password).
    connect_args: Mapping[str, Any] = field(repr=False)
    dropped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def is_pooler(mode: str, target: Target) -> bool:
    """Neon's pooled endpoint is PgBouncer in transaction mode, named by `-pooler` on the ID.

    `mode` is DATABASE_POOLER; with `auto`, any host the client may reach counts (a host list
    is tried in turn), in any letter case, as DNS names are."""
    if mode != "auto":
        return mode == "pgbouncer"
    return any(
        endpoint.host.split(".")[0].lower().endswith("-pooler") for endpoint in target.endpoints
    )


# A Neon endpoint's host: its endpoint ID as the first label, under neon.tech (an extra label,
# such as c-2., may stand before the region).
NEON_POOLER_HOST = re.compile(
    r"(?P<endpoint>ep-[a-z0-9-]+)-pooler(?P<rest>(\.[a-z0-9-]+)*\.neon\.tech)\.?"
)


def neon_direct_host(host: str) -> str | None:
    """The direct host of a Neon -pooler host, by Neon's rule: the same host without `-pooler`
    on the endpoint ID. None for any other host, where no rule says what the direct one is."""
    match = NEON_POOLER_HOST.fullmatch(host.lower())
    return None if match is None else f"{match['endpoint']}{match['rest']}"


def check_scheme(url: URL) -> None:
    backend = url.get_backend_name()
    if backend not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"DATABASE_URL must be a PostgreSQL URL (postgresql://…), got scheme {backend!r}"
        )
    sync_driver(url)


# The driver a URL's scheme names → the sync engine's. SQLAlchemy refuses postgres:// since 1.4,
# and from 2.1 a bare postgresql:// means psycopg 3; here both stay psycopg2, the default, which
# never prepares server-side and so is safe behind the pooler as it is. An asyncpg URL pasted as
# DATABASE_URL names the async engine's driver, not a sync one: psycopg2 serves the sync path.
SYNC_DRIVERS = {
    None: "psycopg2",
    "psycopg2": "psycopg2",
    "asyncpg": "psycopg2",
    "psycopg": "psycopg",
    "psycopg_async": "psycopg",
}


def sync_driver(url: URL) -> str:
    """The sync engine's driver by the URL's scheme: psycopg for postgresql+psycopg://."""
    name = url.drivername.partition("+")[2] or None
    if name not in SYNC_DRIVERS:
        raise ConfigurationError(
            f"DATABASE_URL names the driver {name!r} (postgresql+{name}://), which the layer "
            "does not run: use postgresql:// (psycopg2) or postgresql+psycopg:// (psycopg 3)"
        )
    return SYNC_DRIVERS[name]


def refuse_startup_settings_on_pooler(settings: DatabaseSettings, pooler: bool) -> None:
    if pooler and _has_startup_settings(settings.url.query.get("options")):
        raise ConfigurationError(
            f"{settings.origin('options')} sends `-c …` settings to a -pooler host, which "
            "PgBouncer refuses (unsupported startup parameter: options): use the direct host, "
            "or SET LOCAL in a transaction"
        )


def _has_startup_settings(options: str | tuple[str, ...] | None) -> bool:
    # `options=endpoint=<id>` is Neon's SNI workaround and passes the pooler; `-c x=y` does not.
    text = " ".join(options) if isinstance(options, tuple) else options or ""
    return "-c" in text.split() or "--" in text


def libpq_args(
    settings: DatabaseSettings,
    target: Target,
    sslmode: str,
    *,
    driver: str,
    libpq_version: int | None,
    pooler: bool,
) -> DriverArgs:
    """What a libpq driver (psycopg2, or psycopg 3 sync or async) is handed: every libpq
    parameter in the URL's query, and DATABASE_URL's secret parameters (sslpassword, …) as
    arguments, never in a shown URL. libpq applies its own rules to them (channel_binding,
    host lists, service files), on either driver."""
    url = settings.url
    if url.query.get("sslrootcert") == "system" and libpq_version and libpq_version < 160000:
        raise ConfigurationError(
            f"sslrootcert=system ({settings.origin('sslrootcert')}) needs libpq 16 or newer, "
            f"and {driver} here uses libpq "
            f"{libpq_version // 10000}: give the CA bundle's path instead, e.g. "
            "sslrootcert=/etc/ssl/certs/ca-certificates.crt"
        )
    # asyncpg's own parameters, meant for its engine, would be "invalid connection option"s to
    # libpq.
    libpq_query = url.difference_update_query(set(ASYNCPG_PARAMETERS) - SHARED_PARAMETERS)
    libpq_url = _with_target(libpq_query, target, driver).update_query_dict(
        {
            "sslmode": sslmode,
            "connect_timeout": str(settings.connect_timeout),
            "application_name": settings.application_name,
        }
    )
    args: dict[str, Any] = {
        name: secret.get_secret_value() for name, secret in settings.secrets.items()
    }
    if driver == "psycopg" and pooler:
        # psycopg 3 prepares a statement run five times on a connection; PgBouncer in
        # transaction mode hands the next transaction to another server connection, where that
        # statement does not exist (or another client's of the same name does: 42P05).
        args["prepare_threshold"] = None
    return DriverArgs(libpq_url, MappingProxyType(args))


def _with_target(url: URL, target: Target, driver: str) -> URL:
    """Every host, address, port, user and database explicit, so libpq reads no PG* for them."""
    url = url.difference_update_query(TARGET_PARAMETERS).set(
        drivername=f"postgresql+{driver}", username=target.user, database=target.database
    )
    if (one := target.single_host) is not None:
        return url.set(host=one.host, port=one.port)
    endpoints = target.endpoints
    query = {
        "host": ",".join(e.host for e in endpoints),
        "port": ",".join(str(e.port) for e in endpoints),
    }
    if any(e.address for e in endpoints):
        query["hostaddr"] = ",".join(e.address or "" for e in endpoints)
    return url.set(host=None, port=None).update_query_dict(query)


# URL parameters asyncpg.connect() takes as they are, with the type it needs them in.
ASYNCPG_PARAMETERS: dict[str, type] = {
    "target_session_attrs": str,
    "passfile": str,
    "krbsrvname": str,
    "gsslib": str,
    "command_timeout": float,
    "statement_cache_size": int,
    "prepared_statement_cache_size": int,  # SQLAlchemy's own cache, read by its dialect
}
# ...of which libpq knows these too, under the same names.
SHARED_PARAMETERS = frozenset({"target_session_attrs", "passfile", "krbsrvname", "gsslib"})


def asyncpg_args(
    settings: DatabaseSettings, target: Target, pooler: bool, ssl: SSLContext | str | bool
) -> DriverArgs:
    """The async engine's: the libpq words of the URL translated into asyncpg's arguments,
    with `ssl` (backend.db.connection.tls.asyncpg_ssl_word, or the plan's SSLContext).

    SQLAlchemy's asyncpg dialect passes every query parameter to asyncpg.connect() as a keyword,
    and asyncpg knows none of libpq's (`sslmode` gives TypeError), so none stays in the URL.
    """
    url = settings.url
    query = dict(url.query)
    args: dict[str, Any] = {"ssl": ssl, "timeout": float(settings.connect_timeout)}
    server_settings: dict[str, str] = {}
    dropped = [name for name in settings.secrets if name != "sslpassword"]
    for name in (*TARGET_PARAMETERS, *TLS_FILES):
        query.pop(name, None)  # in the host lists and the SSL context now
    if options := query.pop("options", None):
        server_settings["options"] = str(options)  # libpq sends it as this startup parameter
    for name, value in query.items():
        if name in ASYNCPG_PARAMETERS:
            args[name] = _coerce(name, value)
        else:
            dropped.append(name)
    if pooler:
        # PgBouncer in transaction mode hands each transaction to any server connection, where a
        # named prepared statement from another one does not exist.
        args |= {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    else:
        # PgBouncer refuses startup parameters it does not know; a direct server takes them.
        server_settings["application_name"] = settings.application_name
    if server_settings:
        args["server_settings"] = MappingProxyType(server_settings)
    async_url = url.set(
        drivername="postgresql+asyncpg",
        query={},
        username=target.user,
        database=target.database,
    )
    if (one := target.single_host) is not None:
        async_url = async_url.set(host=one.host, port=one.port)
    else:
        # asyncpg takes host and port lists and tries them in turn, as libpq does; it has no
        # hostaddr, so it connects to the address (NamedHostContext keeps the name for TLS).
        async_url = async_url.set(host=None, port=None)
        args["host"] = [endpoint.connects_to for endpoint in target.endpoints]
        args["port"] = [endpoint.port for endpoint in target.endpoints]
    warnings = _unsupported(async_url, dropped)
    return DriverArgs(async_url, MappingProxyType(args), tuple(dropped), warnings)


def _coerce(name: str, value: Any) -> Any:
    try:
        return ASYNCPG_PARAMETERS[name](value)
    except ValueError:
        raise ConfigurationError(
            f"{name} in DATABASE_URL must be a number, got {value!r}"
        ) from None


def _unsupported(async_url: URL, dropped: list[str]) -> tuple[str, ...]:
    """What the async engine says, when it is built, of the parameters asyncpg has no word for."""
    said = []
    if "channel_binding" in dropped:
        said.append(
            "channel_binding is not enforced on the async path (asyncpg has no channel "
            f"binding); the sync path enforces it for {async_url!r}"
        )
    if ignored := sorted(set(dropped) - {"channel_binding"}):
        said.append(
            f"the async engine (asyncpg) ignores {ignored} from DATABASE_URL or the PG* "
            "variables: asyncpg has no such parameter; the sync engine (libpq) uses them"
        )
    return tuple(said)
