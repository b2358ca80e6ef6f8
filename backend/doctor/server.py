"""What the server says once the layer's own engines connect: who we are, what it is, how far
it is, and whether a pooler stands in front of it. Its settings (connection slots, timeouts)
are judged in server_settings.py.

Nothing here writes: the connection runs in autocommit, and every statement is a SELECT or
SHOW of this module's own.
"""

import asyncio
import math
import statistics
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db.connection.plan import ConnectionPlan
from backend.db.engines.error_reports import describe
from backend.db.engines.errors import classify, libpq_lines
from backend.db.engines.health import libpq_uses_tls
from backend.db.engines.readonly import READ_ONLY_OPTIONS
from backend.doctor.report import Step

SLOW_ROUND_TRIP_MS = 30.0  # farther than a region: every statement pays it


def authenticate(engine: Engine) -> tuple[Step, Connection | None]:
    """Connect through the sync engine, as the app does: TLS, the password, the database."""
    try:
        connection = engine.connect()
        connection.execution_options(isolation_level="AUTOCOMMIT")
    except SQLAlchemyError as exc:
        return failure("authentication", exc), None
    driver_connection = connection.connection.driver_connection
    ssl = bool(libpq_uses_tls(driver_connection))
    tls = f"TLS {_tls_protocol(driver_connection)}".strip() if ssl else "no TLS"
    url = engine.url
    return Step(
        "authentication",
        "pass",
        f"as {url.username} to database {url.database}, {tls} ({engine.dialect.driver}, libpq)",
        facts={"user": url.username, "database": url.database, "ssl": ssl},
    ), connection


def _tls_protocol(driver_connection: Any) -> str:
    # psycopg2 asks libpq (PQsslAttribute); psycopg 3 has no such call (its pgconn knows only
    # ssl_in_use), and the `tls` step has already named the protocol the server offers.
    info = getattr(driver_connection, "info", None)
    protocol = getattr(info, "ssl_attribute", None)
    return str(protocol("protocol")) if callable(protocol) else ""


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
    """One SELECT through the async engine (asyncpg or psycopg 3), which the app builds on
    first use."""
    if engine is None:
        return Step("async path", "skip", "skipped: its driver is not installed (sync only)")
    driver = engine.dialect.driver

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
            # The driver's statements, prepared on one server connection, sought on another.
            step.fix = (
                "a pooler in transaction mode is in between: set DATABASE_POOLER=pgbouncer, "
                f"which turns {driver}'s prepared statements off"
            )
        return step
    return Step("async path", "pass", f"{driver} connects and answers")


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
    parameters = {**cparams, **plan.sync_driver.connect_args, "options": options}
    try:
        # The sync engine's own driver (psycopg2 or psycopg 3), without its pool and retries.
        probe = engine.dialect.connect(*cargs, **parameters)
    except engine.dialect.loaded_dbapi.Error as exc:
        said = _first_said(exc)
        if "unsupported startup parameter" in said:
            return Pooler("pgbouncer", f"it refused a startup parameter ({said})")
        return Pooler("unknown", f"a connection with a startup parameter failed: {said}")
    try:
        probe.autocommit = True
        cursor = probe.cursor()
        cursor.execute("SHOW default_transaction_read_only")
        row = cursor.fetchone()
    finally:
        probe.close()
    if row and row[0] == "on":
        return Pooler("none", "the server applied a startup parameter")
    return Pooler("ignores", "it took a startup parameter and did not apply it")


def _first_said(exc: BaseException) -> str:
    """libpq's words for a failed connect, without the frames libpq and psycopg put around
    them: the server's, if it answered, else libpq's own."""
    lines = list(libpq_lines(exc))
    said = next((line for from_server, line in lines if from_server), None)
    return said or (lines[0][1] if lines else type(exc).__name__)


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
            f"a pooler: {found.evidence}, but {layer}: its read engines send startup "
            "options, and asyncpg or psycopg 3 prepares statements PgBouncer cannot follow",
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
            f"direct: {found.evidence}, but {layer}: the read path goes without the "
            "server's read-only guard, and asyncpg or psycopg 3 without prepared statements",
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
