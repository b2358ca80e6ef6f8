"""Idle-aware pre-ping: test a pooled connection only if it sat idle long enough to have died.

SQLAlchemy's pool_pre_ping tests every connection at every checkout: one more round trip on
every request, a whole RTT on a WAN link to Neon. What kills a pooled connection there is a
compute suspending after 5 idle minutes, so a connection checked in seconds ago is alive. A
connection cut while warm (a restart) fails its first request, as with no pre-ping at all.
"""

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

CHECKED_IN_AT = "backend_checked_in_at"


def ping_when_idle(engine: Engine, idle_after: float) -> None:
    """On checkout, ping connections idle longer than `idle_after` seconds; replace dead ones."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def remember_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        checked_in_at = record.info.get(CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at <= idle_after:
            return  # new, or recently in use: alive
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # SQLAlchemy's own way: the pool drops this connection and checks out a new one.
            raise DisconnectionError("a pooled connection died while idle") from exc
