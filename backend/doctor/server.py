"""What the server says once the layer's own engines connect: who we are, what it is, how far
it is, how many connections it takes, and the settings that matter on Neon.

Nothing here writes: the connection runs in autocommit, and every statement is a SELECT or
SHOW of this module's own.
"""

import asyncio
import math
import statistics
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import psycopg2
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db.connection.plan import ConnectionPlan
from backend.db.engines.error_reports import describe
from backend.db.engines.errors import classify
from backend.db.engines.readonly import READ_ONLY_OPTIONS
from backend.doctor.budget import Budget
from backend.doctor.report import Step
from backend.settings import DatabaseSettings

# Read in one query; a name the server does not know (reserved_connections before 16) is
# simply not there.
SETTINGS = (
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "statement_timeout",
    "idle_in_transaction_session_timeout",
)
SLOW_ROUND_TRIP_MS = 30.0  # farther than a region: every statement pays it
ROOM = 0.8  # a budget above this share of the slots leaves little for anyone else
NEON_MAX_CLIENT_CONN = 10_000  # Neon's PgBouncer (connection-pooling docs)


def authenticate(engine: Engine) -> tuple[Step, Connection | None]:
    """Connect through the sync engine, as the app does: TLS, the password, the database."""
    try:
        connection = engine.connect()
        connection.execution_options(isolation_level="AUTOCOMMIT")
    except SQLAlchemyError as exc:
        return failure("authentication", exc), None
    dbapi = connection.connection.dbapi_connection
    info: Any = getattr(dbapi, "info", None)
    url = engine.url
    tls = f"TLS {info.ssl_attribute('protocol')}" if info and info.ssl_in_use else "no TLS"
    return Step(
        "authentication",
        "pass",
        f"as {url.username} to database {url.database}, {tls} (psycopg2, libpq)",
        facts={
            "user": url.username,
            "database": url.database,
            "ssl": bool(info and info.ssl_in_use),
        },
    ), connection


def failure(name: str, exc: BaseException) -> Step:
    """A step the server (or the way to it) refused, with the fix when it is a setting."""
    verdict = classify(exc)
    facts = {"kind": verdict.kind if verdict else None, "sqlstate": verdict and verdict.sqlstate}
    if verdict is not None and verdict.fix:
        fix = verdict.fix
    elif verdict is not None and verdict.kind == "timeout":
        fix = "the server did not answer in time: raise DATABASE_CONNECT_TIMEOUT or check the link"
    else:
        fix = (
            "the server refused or dropped the connection: check that it runs (Neon: the "
            "compute's state in the console) and DATABASE_CONNECT_TIMEOUT"
        )
    return Step(name, "fail", describe(exc), fix=fix, facts=facts)


def async_path(engine: AsyncEngine | None) -> Step:
    """One SELECT through the async engine (asyncpg), which the app builds on first use."""
    if engine is None:
        return Step("async path", "skip", "skipped: asyncpg is not installed (sync only)")

    async def select_one() -> None:
        try:
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.exec_driver_sql("SELECT 1")
        finally:
            await engine.dispose()

    try:
        asyncio.run(select_one())
    except (SQLAlchemyError, OSError) as exc:
        step = failure("async path", exc)
        if "prepared statement" in step.detail:
            # asyncpg's statements, prepared on one server connection, sought on another.
            step.fix = (
                "a pooler in transaction mode is in between: set DATABASE_POOLER=pgbouncer, "
                "which turns asyncpg's statement caches off"
            )
        return step
    return Step("async path", "pass", "asyncpg connects and answers")


def server_version(connection: Connection) -> Step:
    version = str(connection.exec_driver_sql("SELECT current_setting('server_version')").scalar())
    return Step("server", "pass", f"PostgreSQL {version}", facts={"version": version})


@dataclass(frozen=True)
class Pooler:
    kind: str  # "pgbouncer" (refused startup parameters), "ignores" them, "none", "unknown"
    evidence: str


def detect_pooler(engine: Engine, plan: ConnectionPlan) -> Pooler:
    """Whether a PgBouncer is in between: it refuses startup parameters (Neon's -pooler:
    `unsupported startup parameter: options`), and the server itself applies them.

    A connection of its own sends `options=-c default_transaction_read_only=on`, then asks
    whether it took. Proxies that pass the startup packet on (Neon's, for direct hosts) are
    not poolers, and are not taken for one: the server answers `on`."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    options = f"{cparams.get('options', '')} {READ_ONLY_OPTIONS}".strip()
    parameters = {**cparams, **plan.psycopg2.connect_args, "options": options}
    try:
        probe = psycopg2.connect(*cargs, **parameters)
    except psycopg2.Error as exc:
        # libpq's "connection to server at …, port … failed: FATAL:  <the server's words>"
        said = str(exc).strip().split("FATAL:")[-1].strip() or type(exc).__name__
        if "unsupported startup parameter" in said:
            return Pooler("pgbouncer", f"it refused a startup parameter ({said})")
        return Pooler("unknown", f"a connection with a startup parameter failed: {said}")
    try:
        probe.autocommit = True
        with probe.cursor() as cursor:
            cursor.execute("SHOW default_transaction_read_only")
            row = cursor.fetchone()
    finally:
        probe.close()
    if row and row[0] == "on":
        return Pooler("none", "the server applied a startup parameter")
    return Pooler("ignores", "it took a startup parameter and did not apply it")


def pooler(engine: Engine, plan: ConnectionPlan) -> Step:
    found, by_url = detect_pooler(engine, plan), plan.is_pooler
    why = {
        "pgbouncer": "DATABASE_POOLER=pgbouncer",
        "none": "DATABASE_POOLER=none",
    }.get(plan.settings.pooler, f"the host name {'ends' if by_url else 'does not end'} in -pooler")
    layer = f"the layer takes it for a {'pooler' if by_url else 'direct host'} ({why})"
    facts = {"detected": found.kind, "layer_says": "pooler" if by_url else "direct"}
    if found.kind in ("pgbouncer", "ignores") and by_url:
        return Step("pooler", "pass", f"a pooler: {found.evidence}; {layer}", facts=facts)
    if found.kind in ("pgbouncer", "ignores"):
        return Step(
            "pooler",
            "fail",
            f"a pooler: {found.evidence}, but {layer}: its read engines send "
            "startup options, and asyncpg keeps prepared statements PgBouncer cannot follow",
            fix="set DATABASE_POOLER=pgbouncer (Neon's pooled hosts end in -pooler, which "
            "DATABASE_POOLER=auto recognises)",
            facts=facts,
        )
    if found.kind == "none" and not by_url:
        return Step("pooler", "pass", f"direct: {found.evidence}; {layer}", facts=facts)
    if found.kind == "none":
        return Step(
            "pooler",
            "warn",
            f"direct: {found.evidence}, but {layer}: the read path goes "
            "without the server's read-only guard, and asyncpg without its statement cache",
            fix="set DATABASE_POOLER=none if this host is not a pooler",
            facts=facts,
        )
    return Step("pooler", "warn", f"could not tell: {found.evidence}; {layer}", facts=facts)


def round_trip(connection: Connection, pings: int) -> Step:
    """`SELECT 1` on the driver's own cursor, `pings` times: the link, not SQLAlchemy."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    took = []
    try:
        for _ in range(pings):
            started = perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            took.append((perf_counter() - started) * 1000)
    finally:
        cursor.close()
    median = statistics.median(took)
    p99 = sorted(took)[math.ceil(0.99 * len(took)) - 1]  # nearest rank
    facts = {"pings": pings, "median_ms": round(median, 3), "p99_ms": round(p99, 3)}
    detail = f"median {median:.2f} ms, p99 {p99:.2f} ms over {pings} pings"
    if median > SLOW_ROUND_TRIP_MS:
        return Step(
            "round trip",
            "warn",
            f"{detail}: a request pays this for each statement",
            facts=facts,
            fix="run the app in the database's region (Neon's host names it: ep-….<region>…)",
        )
    return Step("round trip", "pass", detail, facts=facts)


def server_settings(connection: Connection) -> dict[str, str]:
    rows = connection.exec_driver_sql(
        "SELECT name, setting FROM pg_settings WHERE name = ANY(%(names)s)",
        {"names": list(SETTINGS)},
    )
    return {str(name): str(value) for name, value in rows}


def connections(values: dict[str, str], budget: Budget, through_pooler: bool) -> Step:
    """The budget against the server's slots that a role without superuser may take."""
    slots = int(values["max_connections"])
    reserved = int(values.get("superuser_reserved_connections", 0)) + int(
        values.get("reserved_connections", 0)
    )
    available = slots - reserved
    facts = {
        "budget": budget.total,
        "workers": budget.workers,
        "engines": list(budget.engines),
        "per_engine": list(budget.per_engine),
        "per_worker": budget.per_worker,
        "max_connections": slots,
        "reserved": reserved,
        "available": available,
    }
    counted = f"{budget.total}: {budget.explain()}, for {', '.join(budget.engines)}"
    fix = (
        "lower DATABASE_POOL_SIZE and DATABASE_MAX_OVERFLOW (DATABASE_READ_POOL_SIZE and "
        "DATABASE_READ_MAX_OVERFLOW for the read engines) or the workers, connect through the "
        "-pooler host, or give the compute more (Neon: max_connections follows its size)"
    )
    if through_pooler:
        detail = (
            f"client connections to the pooler this service may open: {counted}; the "
            f"server's {slots} max_connections bound PgBouncer's own pool, not these"
        )
        if budget.total > NEON_MAX_CLIENT_CONN:
            return Step(
                "connections",
                "fail",
                f"{detail}: more than Neon's pooler takes ({NEON_MAX_CLIENT_CONN})",
                fix=fix,
                facts=facts,
            )
        return Step("connections", "pass", detail, facts=facts)
    detail = (
        f"connections this service may open per instance: {counted}; the server takes "
        f"{available} ({slots} max_connections - {reserved} reserved)"
    )
    if budget.total > available:
        return Step("connections", "fail", detail, fix=fix, facts=facts)
    if budget.total > ROOM * available:
        return Step(
            "connections", "warn", f"{detail}: little room for other clients", fix=fix, facts=facts
        )
    return Step("connections", "pass", detail, facts=facts)


def statement_timeout(values: dict[str, str], settings: DatabaseSettings, user: str) -> Step:
    """The server's limit against the client's (DATABASE_STATEMENT_TIMEOUT)."""
    server_ms = int(values["statement_timeout"])
    client_ms = settings.statement_timeout * 1000
    facts = {"server_ms": server_ms, "client_ms": client_ms}
    # A little under the client's, so that the server's error (57014: 504) comes first and the
    # connection survives; 25 s under the default 30.
    below = max(1, math.floor(settings.statement_timeout * 5 / 6)) if client_ms else 25
    fix = f"ALTER ROLE {role(user)} SET statement_timeout = '{below}s'"
    server = f"{server_ms} ms" if server_ms else "0 (none)"
    client = f"DATABASE_STATEMENT_TIMEOUT {settings.statement_timeout:g} s"
    if server_ms == 0 or (client_ms and server_ms >= client_ms):
        gives_up = (
            f"the client gives up first ({client}) and the server runs the statement on"
            if client_ms
            else "nothing bounds a statement (DATABASE_STATEMENT_TIMEOUT is 0 too)"
        )
        return Step("statement_timeout", "warn", f"{server}: {gives_up}", fix=fix, facts=facts)
    return Step(
        "statement_timeout", "pass", f"{server}, below the client's ({client})", facts=facts
    )


def idle_in_transaction(values: dict[str, str], user: str) -> Step:
    value = int(values["idle_in_transaction_session_timeout"])
    facts = {"server_ms": value}
    if value == 0:
        return Step(
            "idle_in_transaction",
            "warn",
            "idle_in_transaction_session_timeout is 0 (none): a "
            "transaction left open holds its connection, and keeps a Neon compute awake",
            fix=f"ALTER ROLE {role(user)} SET idle_in_transaction_session_timeout = '5min' "
            "(Neon's own default)",
            facts=facts,
        )
    return Step(
        "idle_in_transaction",
        "pass",
        f"idle_in_transaction_session_timeout {value} ms",
        facts=facts,
    )


def role(name: str) -> str:
    """The role as SQL names it: quoted unless a plain lower-case identifier."""
    plain = name.isascii() and name.replace("_", "a").isalnum() and name == name.lower()
    return name if plain and not name[0].isdigit() else '"' + name.replace('"', '""') + '"'
