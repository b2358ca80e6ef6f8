"""The connection plan: where and how the settings connect, worked out once per settings.

`plan_connection(settings)` resolves the target (every host, address, port, the user and the
database), gives it its sslmode, finds the TLS files and loads them into asyncpg's SSL context
(the client key with them), and translates the URL for each driver. Every rule of both drivers
is applied while it is built, the async path's too, so a plan that was built is the startup
check passed; the engines, the app's startup lines, `serve` and `check` all read the one plan.

Its I/O (the login name, the TLS files, the client key: backend.db.connection.machine) happens
here and nowhere else; url.py, target.py and tls.py are pure rules on the values it hands them.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib.util import find_spec
from ssl import SSLContext
from types import MappingProxyType

import psycopg2.extensions

from backend.db.connection.machine import load_client_key, login_name, ssl_context, tls_files
from backend.db.connection.target import Target, resolve
from backend.db.connection.tls import asyncpg_ssl_word, effective_sslmode
from backend.db.connection.url import (
    DriverArgs,
    asyncpg_args,
    check_scheme,
    is_pooler,
    libpq_args,
    neon_direct_host,
    refuse_startup_settings_on_pooler,
    sync_driver,
)
from backend.settings import (
    ConfigurationError,
    DatabaseSettings,
    NoDirectEndpoint,
    naming,
    replica_errors,
)


@dataclass(frozen=True)
class ConnectionPlan:
    """How to connect, by the settings' rules: one value, built once, read by everyone."""

    # What it was made from: the pool options, and where each parameter came from (`origin`).
    settings: DatabaseSettings
    target: Target
    # Neon's -pooler endpoint, PgBouncer in transaction mode (or DATABASE_POOLER says so).
    is_pooler: bool
    sslmode: str
    # The TLS files the drivers read, by libpq parameter: named, or libpq's defaults found.
    tls_files: Mapping[str, str]
    # The SSL context (or asyncpg's word for the sslmode) the plan's TLS rule comes to: what
    # asyncpg connects with, and what `check` verifies the server's certificate against.
    ssl: SSLContext | str | bool
    # The sync engine's (psycopg2, or psycopg 3 for postgresql+psycopg://) and the async
    # engine's (asyncpg, or psycopg 3: DATABASE_ASYNC_DRIVER), each URL naming its driver; an
    # asyncpg plan also says what asyncpg drops and the warnings it gets.
    sync_driver: DriverArgs
    async_driver: DriverArgs
    # Where the URL came from, for the startup line: the variable, or how it was derived.
    source: str = "DATABASE_URL"

    def origin(self, parameter: str) -> str:
        """Where a URL parameter came from, for messages: `host in DATABASE_URL` or `PGHOST`."""
        return self.settings.origin(parameter)

    @property
    def came_from(self) -> str:
        """`from DATABASE_DIRECT_URL`, or how the URL was derived: for the startup line, check."""
        return self.source if self.source == DERIVED else f"from {self.source}"

    @property
    def sync_driver_name(self) -> str:
        return self.sync_driver.url.get_driver_name()

    @property
    def async_driver_name(self) -> str:
        return self.async_driver.url.get_driver_name()


def plan_connection(settings: DatabaseSettings) -> ConnectionPlan:
    """The plan for `settings`, or the ConfigurationError that names the setting to change."""
    url = settings.url
    check_scheme(url)
    target = resolve(url, url.username or login_name(), settings.origin)
    pooler = is_pooler(settings.pooler, target)
    refuse_startup_settings_on_pooler(settings, pooler)
    sslmode = effective_sslmode(settings, target)
    files = tls_files(settings, sslmode)
    word = asyncpg_ssl_word(target, sslmode, files)
    ssl: SSLContext | str | bool
    if word is None:
        ssl = ssl_context(settings, target, sslmode, files)
        if "sslcert" in files:
            # Here, once: libpq reads the same files, and this is where a key that needs a
            # passphrase nobody gave is refused.
            load_client_key(ssl, settings, files)
    else:
        ssl = word
    driver = sync_driver(url)
    sync = libpq_args(
        settings, target, sslmode, driver=driver, libpq_version=_libpq(driver), pooler=pooler
    )
    if settings.async_driver == "psycopg":
        async_args = libpq_args(
            settings, target, sslmode, driver="psycopg", libpq_version=_libpq("psycopg"),
            pooler=pooler,
        )  # fmt: skip
    else:
        async_args = asyncpg_args(settings, target, pooler, ssl)
    return ConnectionPlan(
        settings=settings,
        target=target,
        is_pooler=pooler,
        sslmode=sslmode,
        tls_files=MappingProxyType(files),
        ssl=ssl,
        sync_driver=sync,
        async_driver=async_args,
    )


def _libpq(driver: str) -> int | None:
    """The version of the libpq `driver` runs on (psycopg's binary wheel brings its own)."""
    if driver == "psycopg2":
        return int(psycopg2.extensions.libpq_version())
    if find_spec("psycopg") is None:  # an extra: the engine that needs it says so when built
        return None
    import psycopg.pq

    return int(psycopg.pq.version())


def plan_replicas(settings: DatabaseSettings) -> tuple[ConnectionPlan, ...]:
    """A plan per read replica (DATABASE_READ_URL); a refusal names the replica's URL."""
    plans = []
    count = len(settings.replicas)
    for position, replica in enumerate(settings.replicas, 1):
        with replica_errors(position, count):
            plans.append(plan_connection(replica))
    return tuple(plans)


DERIVED = "derived from DATABASE_URL's -pooler host"


def plan_direct(settings: DatabaseSettings, primary: ConnectionPlan) -> ConnectionPlan:
    """The direct endpoint's plan (migrations, advisory locks, LISTEN, long admin work), never
    a pooler: the direct URL that was set (DATABASE_DIRECT_URL, DATABASE_URL_UNPOOLED); else,
    for a Neon -pooler DATABASE_URL, its direct host by Neon's rule; else, where DATABASE_URL
    is no pooler, `primary` itself. A pooler with no direct host known is NoDirectEndpoint,
    which names DATABASE_DIRECT_URL: the layer never hands out the pooler as the direct one.
    """
    if settings.direct is not None:
        where = settings.direct_variable or "DATABASE_DIRECT_URL"
        with naming(where):
            plan = plan_connection(settings.direct)
        if plan.is_pooler:
            raise ConfigurationError(
                f"{where} names a -pooler host, Neon's PgBouncer in transaction mode: give the "
                "direct endpoint's URL (the same host without -pooler)"
            )
        return replace(plan, source=where)
    endpoint = primary.target.single_host
    # Neon's -pooler host is its PgBouncer whatever DATABASE_POOLER says of it.
    neon_pooler = endpoint is not None and neon_direct_host(endpoint.host) is not None
    if not (primary.is_pooler or neon_pooler):
        return primary
    direct = _derived(settings, primary)
    return replace(plan_connection(direct), source=DERIVED)


def _derived(settings: DatabaseSettings, primary: ConnectionPlan) -> DatabaseSettings:
    endpoint = primary.target.single_host
    host = None if endpoint is None else neon_direct_host(endpoint.host)
    options = settings.url.query.get("options")
    # Neon's SNI workaround names the -pooler endpoint in `options=endpoint=…`, which the
    # proxy would find inconsistent with the direct host.
    if endpoint is None or host is None or "endpoint=" in str(options or ""):
        why = (
            f"DATABASE_POOLER={settings.pooler}"
            if settings.pooler != "auto"
            else "a -pooler host that gives no single Neon direct host"
        )
        raise NoDirectEndpoint(
            f"no direct endpoint is known: DATABASE_URL is a pooler ({why}) and "
            "DATABASE_DIRECT_URL is not set; set it to the server's own URL, which migrations, "
            "advisory locks and LISTEN need (PgBouncer in transaction mode breaks them)"
        )
    url = settings.url.difference_update_query({"host", "port"}).set(host=host, port=endpoint.port)
    origins = {**settings.origins, "host": f"the direct host ({DERIVED})"}
    return settings.model_copy(
        update={"url": url, "pooler": "auto", "replicas": (), "origins": origins}
    )
