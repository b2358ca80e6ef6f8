"""The server's settings that decide whether the layer fits: its connection slots against the
budget, and the timeouts that would end the layer's statements or idle transactions.

Read once, in one query, by `read`; each check is a pure function of those values.
"""

import math

from sqlalchemy import Connection

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
ROOM = 0.8  # a budget above this share of the slots leaves little for anyone else
NEON_MAX_CLIENT_CONN = 10_000  # Neon's PgBouncer (connection-pooling docs)


def read(connection: Connection) -> dict[str, str]:
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
