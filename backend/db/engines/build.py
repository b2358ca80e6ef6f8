"""A connection plan → the SQLAlchemy engines, sync (psycopg2 or psycopg 3) and async (asyncpg
or psycopg 3), with Neon's options; a read engine with its read-only guards (readonly.py)."""

import logging
from importlib.util import find_spec
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from backend.db.connection.plan import ConnectionPlan
from backend.db.engines.connect_retry import retry_connects
from backend.db.engines.error_reports import label
from backend.db.engines.ping import ping_when_idle
from backend.db.engines.pool import TimedAsyncQueuePool, TimedQueuePool, pool_sizes
from backend.db.engines.readonly import READ_ONLY_OPTIONS, keep_server_guard, refuse_writes
from backend.db.engines.tcp_timeouts import (
    bound_waits,
    deadline_connect_args,
    discard_desynced_connections,
    libpq_tcp_parameters,
)
from backend.settings import DatabaseSettings, MissingDriver

logger = logging.getLogger(__name__)


def create_sync_engine(plan: ConnectionPlan, *, read_only: bool = False) -> Engine:
    """Build the sync engine from the plan's driver (psycopg2, or psycopg 3) and its settings'
    pool options. Like every SQLAlchemy engine it connects on first use, not here.

    `read_only`: autocommit (no BEGIN/ROLLBACK round trips) and writes refused.
    """
    settings = plan.settings
    driver = plan.sync_driver_name
    _require(driver, "sync")
    url = _libpq_url(plan, plan.sync_driver.url, read_only)
    # Secret parameters (sslpassword) go to libpq as arguments: a URL's query is shown by repr.
    deadline = deadline_connect_args(driver, settings.statement_timeout)
    connect_args = {**plan.sync_driver.connect_args, **deadline}
    engine = create_engine(url, connect_args=connect_args, **_engine_options(settings, read_only))
    _add_connection_care(engine, plan, read_only)
    bound_waits(
        engine,
        statement_timeout=settings.statement_timeout,
        tcp_user_timeout=settings.tcp_user_timeout,
        command_timeout=0,
    )
    if read_only and not plan.is_pooler:
        keep_server_guard(engine)  # a request must not leave the setting off for the next
    _label_errors(engine)
    return engine


def create_direct_engine(plan: ConnectionPlan) -> Engine:
    """The direct endpoint's engine (backend.db.connection.plan.plan_direct): migrations,
    advisory locks, LISTEN, long admin work, on the plan's sync driver with its TLS, connect
    timeout, connect retry and TCP timeouts.

    Unpooled (NullPool): such work holds one connection while it runs and then has none to
    keep, so none sits idle against the direct endpoint's max_connections (the pooler's
    10,000 client slots are not in front of it) or goes stale when Neon suspends the compute.
    No client-side statement deadline: DATABASE_STATEMENT_TIMEOUT bounds a request's wait,
    and a migration's DDL may rightly run longer; a dead link still ends within
    DATABASE_TCP_USER_TIMEOUT.
    """
    settings = plan.settings
    driver = plan.sync_driver_name
    _require(driver, "sync")
    url = _libpq_url(plan, plan.sync_driver.url, read_only=False)
    engine = create_engine(
        url,
        connect_args=dict(plan.sync_driver.connect_args),
        poolclass=NullPool,
        echo=settings.echo,
        hide_parameters=not settings.echo,
    )
    retry_connects(engine, settings.connect_retries, budget=settings.connect_timeout)
    _label_errors(engine)
    return engine


def create_async_db_engine(plan: ConnectionPlan, *, read_only: bool = False) -> AsyncEngine:
    """The async twin of create_sync_engine: the plan's async driver (asyncpg, or psycopg 3),
    the same pool."""
    settings = plan.settings
    driver = plan.async_driver_name
    _require(driver, "async")
    # The plan's are shared by every engine built from it: this engine's own copy.
    connect_args = dict(plan.async_driver.connect_args)
    if driver == "psycopg":
        url = _libpq_url(plan, plan.async_driver.url, read_only)
        command_timeout: float | None = None
    else:
        url = plan.async_driver.url
        server_settings = dict(connect_args.pop("server_settings", {}))
        if read_only and not plan.is_pooler:
            # The server's guard for asyncpg on a direct host, at no round trip (refuse_writes).
            server_settings["default_transaction_read_only"] = "on"
        if server_settings:
            connect_args["server_settings"] = server_settings
        # A command_timeout in DATABASE_URL wins, as the URL's parameters do.
        command_timeout = connect_args.setdefault(
            "command_timeout", settings.statement_timeout or None
        )
    for warning in plan.async_driver.warnings:
        logger.warning(warning)
    engine = create_async_engine(
        url, connect_args=connect_args, **_engine_options(settings, read_only, is_async=True)
    )
    _add_connection_care(engine.sync_engine, plan, read_only)
    bound_waits(
        engine.sync_engine,
        statement_timeout=settings.statement_timeout,
        tcp_user_timeout=settings.tcp_user_timeout,
        command_timeout=command_timeout or 0.0,
    )
    if driver == "asyncpg":
        discard_desynced_connections(engine.sync_engine)
    if read_only and not plan.is_pooler:
        keep_server_guard(engine.sync_engine)
    _label_errors(engine.sync_engine)
    return engine


def _require(driver: str, engine: str) -> None:
    # asyncpg and psycopg 3 are extras: an app that never builds their engine never installs them.
    if driver != "psycopg2" and find_spec(driver) is None:
        raise MissingDriver(engine, driver)


def _libpq_url(plan: ConnectionPlan, url: URL, read_only: bool) -> URL:
    """A libpq driver's URL, with the read-only guard and the TCP timeouts libpq applies."""
    if read_only and not plan.is_pooler:
        # In the startup packet, at no round trip: it also guards SQL sent on the raw driver
        # connection. PgBouncer refuses startup options; each read's own READ ONLY transaction
        # (refuse_writes) is the guard everywhere.
        options = f"{url.query.get('options', '')} {READ_ONLY_OPTIONS}".strip()
        url = url.update_query_dict({"options": options})
    return libpq_tcp_parameters(url, plan.settings.tcp_user_timeout)


def _engine_options(
    settings: DatabaseSettings, read_only: bool = False, *, is_async: bool = False
) -> dict[str, Any]:
    # A read engine's pool may be capped apart (DATABASE_READ_POOL_SIZE): pool_sizes().
    pool_size, max_overflow = pool_sizes(settings, read_only)
    return {
        # QueuePool, with its waits for a free connection counted (/health/db, a warning).
        "poolclass": TimedAsyncQueuePool if is_async else TimedQueuePool,
        # Autocommit: each statement its own transaction, no BEGIN before, no ROLLBACK after.
        **({"isolation_level": "AUTOCOMMIT"} if read_only else {}),
        "echo": settings.echo,
        # Bound values can be personal data; they are shown only when SQL echo is asked for.
        "hide_parameters": not settings.echo,
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": settings.pool_timeout,
        "pool_recycle": settings.pool_recycle,
        # SQLAlchemy's pre-ping pings at every checkout; ping_when_idle only when it can matter.
        "pool_pre_ping": settings.pool_pre_ping and settings.ping_idle_after == 0,
    }


def _add_connection_care(engine: Engine, plan: ConnectionPlan, read_only: bool = False) -> None:
    settings = plan.settings
    retry_connects(engine, settings.connect_retries, budget=settings.connect_timeout)
    if isinstance(engine.pool, TimedQueuePool):
        engine.pool.waits.warn_after = settings.pool_wait_warning
    if settings.pool_pre_ping and settings.ping_idle_after > 0:
        ping_when_idle(engine, settings.ping_idle_after)
    if read_only:
        # Behind a pooler no startup option makes the server read-only: refuse_writes gives
        # each read its READ ONLY transaction in the way its driver can carry one.
        refuse_writes(engine, through_pooler=plan.is_pooler)


def _label_errors(engine: Engine) -> None:
    """Label what `engine` raises with its host, for the one log line a failure gets.

    Added last: a handle_error listener may replace the exception (bound_waits), and
    the one raised is the last listener's."""
    host = str(engine.url.host)
    if isinstance(engine.pool, TimedQueuePool):
        engine.pool.host = host

    @event.listens_for(engine, "handle_error")
    def with_host(context: ExceptionContext) -> None:
        # Whichever is raised: another listener's exception (set only when one returned it),
        # SQLAlchemy's wrapper, or the driver's own when SQLAlchemy does not wrap it.
        chained = getattr(context, "chained_exception", None)
        for error in (chained, context.sqlalchemy_exception, context.original_exception):
            if error is not None:
                label(error, host)
