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
from dataclasses import dataclass
from ssl import SSLContext
from types import MappingProxyType

from psycopg2.extensions import libpq_version

from backend.db.connection.machine import load_client_key, login_name, ssl_context, tls_files
from backend.db.connection.target import Target, resolve
from backend.db.connection.tls import asyncpg_ssl_word, effective_sslmode
from backend.db.connection.url import (
    DriverArgs,
    asyncpg_args,
    check_scheme,
    is_pooler,
    psycopg2_args,
    refuse_startup_settings_on_pooler,
)
from backend.settings import DatabaseSettings, replica_errors


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
    psycopg2: DriverArgs  # the sync engine's
    asyncpg: DriverArgs  # the async engine's, with what asyncpg drops and the warnings it gets

    def origin(self, parameter: str) -> str:
        """Where a URL parameter came from, for messages: `host in DATABASE_URL` or `PGHOST`."""
        return self.settings.origin(parameter)

    @property
    def ssl(self) -> SSLContext | str | bool:
        """asyncpg's `ssl` argument: its own word for the sslmode, or the SSL context."""
        ssl: SSLContext | str | bool = self.asyncpg.connect_args["ssl"]
        return ssl


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
    return ConnectionPlan(
        settings=settings,
        target=target,
        is_pooler=pooler,
        sslmode=sslmode,
        tls_files=MappingProxyType(files),
        psycopg2=psycopg2_args(settings, target, sslmode, libpq_version()),
        asyncpg=asyncpg_args(settings, target, pooler, ssl),
    )


def plan_replicas(settings: DatabaseSettings) -> tuple[ConnectionPlan, ...]:
    """A plan per read replica (DATABASE_READ_URL); a refusal names the replica's URL."""
    plans = []
    count = len(settings.replicas)
    for position, replica in enumerate(settings.replicas, 1):
        with replica_errors(position, count):
            plans.append(plan_connection(replica))
    return tuple(plans)
