"""Neon's behaviours for one test: suspend, cold start, WAN latency, a restarting compute.

The app reaches the test's database through the TLS front (backend/testing/front.py), which
holds, delays, refuses or stalls connections on request; a suspend terminates the backends.
"""

import time
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakSet

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from backend.db.engines.ping import CHECKED_IN_AT
from backend.testing.databases import TestDatabase
from backend.testing.front import TlsFront
from backend.testing.postgres import TestServer

# Neon suspends a compute after 5 idle minutes (the default; "scale to zero").
SUSPEND_AFTER = 300.0


@dataclass
class Neon:
    """`backend_neon`: what a test can do to the database its app reaches."""

    server: TestServer
    database: TestDatabase
    _suspended_at: float | None = None
    _aged: "WeakSet[Engine]" = field(default_factory=WeakSet)

    @property
    def front(self) -> TlsFront:
        assert self.server.front is not None
        return self.server.front

    @property
    def cold_start(self) -> float:
        """Seconds each new connection waits before it reaches the server (Neon waking a
        compute: a few hundred ms)."""
        return self.front.connect_delay

    @cold_start.setter
    def cold_start(self, seconds: float) -> None:
        self.front.connect_delay = seconds

    @property
    def latency(self) -> float:
        """Seconds added to each direction of every exchange (a WAN link to Neon's region)."""
        return self.front.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.front.latency = seconds

    def suspend(self, *, idle: bool = True) -> int:
        """Scale to zero: every backend connection on the test's database is terminated.

        Neon suspends only after 5 idle minutes, so by default the app's pooled connections
        are then treated as idle that long (the layer pings those before use, finds them dead
        and replaces them). `idle=False`: cut them under a warm pool, as a crash does — the
        next use of each fails once. Returns how many backends were terminated, once they are gone.
        """
        if idle:
            self._suspended_at = time.monotonic()
            for container, _, _ in self.database._bound:
                for engine in container.built_engines():
                    self._age(engine)
        return self.server.suspend(self.database.name)

    def refuse_for(self, seconds: float) -> None:
        """New connections are refused as while a compute restarts
        (`Couldn't connect to compute node`)."""
        self.front.refuse_for(seconds)

    def stall(self) -> None:
        """Forward nothing on any connection until resume(): a link gone silent."""
        self.front.stall()

    def resume(self) -> None:
        self.front.resume()

    def reset(self) -> None:
        """Back to a healthy link for the next test."""
        self.front.resume()
        self.front.connect_delay = 0.0
        self.front.latency = 0.0
        self.front.refuse_for(0)

    def _age(self, engine: Engine | AsyncEngine) -> None:
        """Make connections checked in before the suspend look idle for SUSPEND_AFTER."""
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        if sync_engine in self._aged:
            return
        self._aged.add(sync_engine)

        # Before the layer's own checkout listener (ping_when_idle), which reads the mark.
        @event.listens_for(sync_engine, "checkout", insert=True)
        def idle_since_the_suspend(
            dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
        ) -> None:
            checked_in_at = record.info.get(CHECKED_IN_AT)
            suspended_at = self._suspended_at
            if checked_in_at is not None and suspended_at and checked_in_at <= suspended_at:
                record.info[CHECKED_IN_AT] = checked_in_at - SUSPEND_AFTER
