"""Read replicas: what is known of each one (up, lag), and how a read may use it.

The state of each replica (`ReplicaSet`) is shared by the sync and async paths of a container,
which reach the same servers; backend/db/reads/routing.py routes reads by it:

- unknown → ok: the first connect, with DATABASE_URL's connect timeout and retries (a Neon
  replica that is asleep wakes on it: asleep is not unreachable);
- ok → unavailable: a connect that failed after those retries, or a statement cut by a
  disconnect. Retried by one read after 1, 2, 4 … up to 30 s (then every 30 s); the others
  skip it meanwhile. Back when a connect succeeds (and its lag is within the bound);
- ok → lagging: its lag, measured at most once per DATABASE_READ_LAG_CHECK_INTERVAL on the
  connection a read has checked out anyway (one query), is above DATABASE_READ_MAX_LAG.
  Measured again after that interval by one read; back when within the bound.

No thread or timer runs in the background: a periodic query would keep a Neon replica from
ever suspending, where this way an idle app sends nothing, and the cost stays bounded (one lag
query per interval per replica per process, paid by the read that happens to make it).

/health/db's probes of the replicas, over this same state, are in
backend/db/reads/replica_health.py.
"""

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from sqlalchemy import Connection, text

from backend.db.engines.error_reports import describe
from backend.settings import DatabaseSettings, ReadFallback

logger = logging.getLogger("backend")

FIRST_RETRY = 1.0  # seconds after a replica became unavailable; doubled each failed retry
MAX_RETRY = 30.0

# Neon's own compute exporter measures a replica's delay so (neondatabase/neon,
# compute/etc/sql_exporter/replication_delay_seconds.sql), as does prometheus' postgres_exporter
# (#534): the age of the last replayed transaction alone grows on an idle primary although the
# replica is caught up, so a replica that has replayed all the WAL it received is 0 s behind.
# Schema-qualified: a read role's search_path must not change what is called.
LAG_QUERY = text(
    "SELECT pg_catalog.pg_is_in_recovery(),"
    " CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN 0"
    " WHEN pg_catalog.pg_last_wal_receive_lsn() <= pg_catalog.pg_last_wal_replay_lsn() THEN 0"
    " ELSE GREATEST(0, EXTRACT(EPOCH FROM"
    " pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())) END,"
    " pg_catalog.pg_wal_lsn_diff("
    " pg_catalog.pg_last_wal_receive_lsn(), pg_catalog.pg_last_wal_replay_lsn())"
)

Status = Literal["unknown", "ok", "lagging", "unavailable"]


class Lag(NamedTuple):
    in_recovery: bool
    seconds: float | None  # None: nothing replayed yet to date it by
    behind_bytes: int | None  # received WAL not yet replayed; None when not streaming


def measure_lag(connection: Connection) -> Lag:
    in_recovery, seconds, behind = connection.execute(LAG_QUERY).one()
    return Lag(
        bool(in_recovery),
        None if seconds is None else float(seconds),
        None if behind is None else int(behind),
    )


@dataclass
class ReplicaState:
    name: str  # "replica 1 (ep-….neon.tech:5432)": no user, no password
    status: Status = "unknown"
    lag: Lag | None = None
    error: str | None = None
    checked_at: float = -math.inf  # when the lag was last measured (monotonic)
    retry_at: float = 0.0  # when an unavailable or lagging replica is tried again
    failures: int = 0  # consecutive failed connects, for the back-off
    busy: bool = False  # a request is measuring or retrying it: the others do not


Claim = Literal["use", "probe"]


class ReplicaSet:
    """What is known of each replica, shared by the sync and async routers of a container."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        max_lag: float,
        lag_check_interval: float,
        fallback: ReadFallback,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.states = [ReplicaState(name) for name in names]
        self.max_lag = max_lag
        self.lag_check_interval = lag_check_interval
        self.fallback = fallback
        self._clock = clock
        self._lock = threading.Lock()
        self._turn = itertools.count()

    @classmethod
    def of(cls, settings: DatabaseSettings) -> "ReplicaSet":
        return cls(
            [_name(position, replica) for position, replica in enumerate(settings.replicas, 1)],
            max_lag=settings.read_max_lag,
            lag_check_interval=settings.read_lag_check_interval,
            fallback=settings.read_fallback,
        )

    @classmethod
    def none(cls, _: object = None) -> "ReplicaSet":
        """No replicas: reads go to the primary."""
        return cls([], max_lag=0, lag_check_interval=0, fallback="primary")

    def order(self) -> list[int]:
        """The replicas a read may try, in turn: one due for a retry first (someone has to pay
        for it, and it can take reads again only once tried), then the usable ones, each read
        starting at the next (round robin: the reads, and so the connections, spread)."""
        with self._lock:
            now = self._clock()
            count = len(self.states)
            start = next(self._turn) % count if count else 0
            rotation = [(start + step) % count for step in range(count)]
            due = [i for i in rotation if self._due(self.states[i], now)]
            usable = [i for i in rotation if self.states[i].status in ("unknown", "ok")]
            return due[:1] + usable

    def claim(self, index: int) -> Claim | None:
        """How this read may use replica `index`: as it is, to probe it (measure its lag, or
        retry it), or not at all (another read is probing it)."""
        with self._lock:
            state = self.states[index]
            now = self._clock()
            if state.status in ("unknown", "ok"):
                stale = self.max_lag > 0 and now - state.checked_at >= self.lag_check_interval
                if (state.status == "unknown" or stale) and not state.busy:
                    state.busy = True
                    return "probe"
                return "use"
            if self._due(state, now):
                state.busy = True
                return "probe"
            return None

    def measured(self, index: int, lag: Lag) -> bool:
        """Record a probe's measurement; True if the replica may take the read."""
        with self._lock:
            state = self.states[index]
            was = state.status
            state.lag, state.checked_at, state.busy = lag, self._clock(), False
            state.failures, state.error = 0, None
            seconds = lag.seconds or 0.0
            if self.max_lag > 0 and seconds > self.max_lag:
                state.status = "lagging"
                state.retry_at = state.checked_at + self.lag_check_interval
            else:
                state.status = "ok"
        if state.status == "lagging" and was != "lagging":
            logger.warning(
                "read %s is %.1f s behind (DATABASE_READ_MAX_LAG %g s): %s until it catches up",
                state.name, seconds, self.max_lag, self._elsewhere(index),
            )  # fmt: skip
        elif state.status == "ok" and was in ("lagging", "unavailable"):
            logger.info("read %s takes reads again (%.1f s behind)", state.name, seconds)
        if not lag.in_recovery and was == "unknown":
            logger.warning(
                "read %s is not in recovery: it is a primary (or a promoted replica), whose "
                "server does not refuse writes; only the client-side check does",
                state.name,
            )
        return state.status == "ok"

    def reachable(self, index: int) -> None:
        """A probe connected, with no lag to measure (DATABASE_READ_MAX_LAG=0)."""
        with self._lock:
            state = self.states[index]
            was = state.status
            state.status, state.busy, state.failures, state.error = "ok", False, 0, None
        if was == "unavailable":
            logger.info("read %s takes reads again", state.name)

    def unavailable(self, index: int, error: BaseException) -> None:
        """A connect failed (after its retries), or a statement met a dead connection."""
        with self._lock:
            state = self.states[index]
            was = state.status
            if was == "unavailable" and not state.busy and self._clock() < state.retry_at:
                return  # already known (the engine's error event and the router both tell)
            state.failures += 1
            backoff = min(FIRST_RETRY * 2 ** (state.failures - 1), MAX_RETRY)
            state.status, state.busy, state.error = "unavailable", False, describe(error)
            state.retry_at = self._clock() + backoff
        if was != "unavailable":
            logger.warning(
                "read %s is unavailable: %s; %s, retried in %g s",
                state.name, state.error, self._elsewhere(index), backoff,
            )  # fmt: skip

    def release(self, index: int) -> None:
        """A probe that ended without a verdict (the read was abandoned)."""
        with self._lock:
            self.states[index].busy = False

    def summary(self) -> str:
        return "; ".join(
            f"{state.name} {state.status}" + (f" ({state.error})" if state.error else "")
            for state in self.states
        )

    def _due(self, state: ReplicaState, now: float) -> bool:
        out = state.status in ("unavailable", "lagging")
        return out and now >= state.retry_at and not state.busy

    def _elsewhere(self, index: int) -> str:
        others = any(s.status in ("unknown", "ok") for i, s in enumerate(self.states) if i != index)
        if others:
            return "reads go to the other replicas"
        if self.fallback == "primary":
            return "reads go to the primary (DATABASE_READ_FALLBACK=primary)"
        return "reads answer 503 (DATABASE_READ_FALLBACK=fail)"


def _name(position: int, settings: DatabaseSettings) -> str:
    url = settings.url
    where = url.host or url.query.get("host") or "the default host"
    port = f":{url.port}" if url.port else ""
    return f"replica {position} ({where}{port})"
