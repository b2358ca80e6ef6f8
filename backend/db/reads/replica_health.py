"""/health/db's view of the read replicas: each one probed (recovery, lag, latency), within a bound.

A probe reads the same state the routing keeps (`ReplicaSet`, backend/db/reads/replicas.py) and
records what it finds there, so a probe also brings a recovered replica back, or takes a
lagging one out, before a read's next turn. A replica that does not answer within
PROBE_TIMEOUT is answered from what is known until its retry is due.
"""

import asyncio
import logging
import threading
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from time import perf_counter
from typing import TypedDict

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from backend.db.engines.health import PoolStatus, connection_uses_tls, pool_status
from backend.db.reads.replicas import FIRST_RETRY, MAX_RETRY, ReplicaSet, Status, measure_lag

logger = logging.getLogger("backend")


class ReplicaHealth(TypedDict):
    name: str
    status: Status
    in_recovery: bool | None
    lag_s: float | None  # seconds behind the primary (0: replayed all it received)
    behind_bytes: int | None  # WAL received and not yet replayed
    latency_ms: float | None
    ssl: bool | None  # this client's own connection to it (as for the primary)
    error: str | None  # why it is unavailable: the driver's first line
    pool: PoolStatus


# How long /health/db waits for a replica's answer. Short: a platform's health check often
# gives up within a few seconds, and a replica that accepts connections but never answers
# would otherwise hold every call for the whole connect timeout (10 s by default).
PROBE_TIMEOUT = 1.0


@dataclass
class _Probe:
    """/health/db's own record of its probes of one replica.

    Its own, not the routing state's: a probe past PROBE_TIMEOUT says the replica is slow to
    answer, not that it is down (a Neon replica waking from suspend answers in seconds), so
    reads keep their own verdicts, which the probe still records when it ends.
    """

    running: Future[ReplicaHealth] | None = None
    deadline: float = 0.0  # when the running probe's callers stop waiting for it
    retry_at: float = 0.0  # after a probe that did not answer in time, the next one
    failures: int = 0
    error: str | None = None  # why the last probe did not answer in time


@dataclass
class ReadReplicas:
    """The replicas as /health/db and the doctor see them: a sync engine each, and their state.

    `probe()` asks each one (one query: recovery, lag) and records what it finds, so a probe
    also brings a recovered replica back, or takes a lagging one out, before its next turn.
    `probe_bounded()` is /health/db's: the replicas at once, each waited for at most
    PROBE_TIMEOUT; a replica that did not answer in time is answered from what is known until
    its retry is due (1, 2, 4 … up to 30 s), and never probed by two calls at once.
    """

    engines: tuple[Engine, ...]
    state: ReplicaSet
    _probes: list[_Probe] = field(default_factory=list, repr=False)
    _probes_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self.engines)

    def probe(self) -> list[ReplicaHealth]:
        return [self.probe_one(index) for index in range(len(self.engines))]

    async def probe_bounded(
        self, executor: Executor, timeout: float = PROBE_TIMEOUT
    ) -> list[ReplicaHealth]:
        """Every replica probed concurrently on `executor`, none waited for beyond `timeout`."""
        with self._probes_lock:
            while len(self._probes) < len(self.engines):
                self._probes.append(_Probe())
        waits = (self._probe_within(index, executor, timeout) for index in range(len(self)))
        return list(await asyncio.gather(*waits))

    async def _probe_within(self, index: int, executor: Executor, timeout: float) -> ReplicaHealth:
        probe = self._probes[index]
        now = self.state._clock()
        if probe.running is None or (probe.running.done() and now >= probe.retry_at):
            probe.running = executor.submit(self.probe_one, index)
            probe.deadline = now + timeout
            probe.running.add_done_callback(lambda done: self._answered(probe, done))
        running = probe.running
        if running.done() and probe.error is not None:
            return self.known(index, probe.error)  # did not answer in time; retry not due
        remaining = probe.deadline - now
        if remaining > 0:
            try:
                # Shielded: one caller giving up does not cancel the probe the others share.
                return await asyncio.wait_for(
                    asyncio.shield(asyncio.wrap_future(running)), remaining
                )
            except TimeoutError:
                pass
        if running.done():  # it answered just now
            return running.result()
        with self._probes_lock:
            if probe.error is None:
                probe.failures += 1
                backoff = min(FIRST_RETRY * 2 ** (probe.failures - 1), MAX_RETRY)
                probe.retry_at = self.state._clock() + backoff
                probe.error = f"TimeoutError: no answer within {timeout:g} s"
                logger.warning(
                    "read %s did not answer /health/db's probe within %g s; probed again in "
                    "%g s at the earliest",
                    self.state.states[index].name, timeout, backoff,
                )  # fmt: skip
        return self.known(index, probe.error)

    def _answered(self, probe: _Probe, done: Future[ReplicaHealth]) -> None:
        # A probe that ends, however late, has the replica's own verdict (recorded in the
        # routing state by probe_one): from now on that is what a call answers.
        if done.cancelled() or done.exception() is not None:
            return
        with self._probes_lock:
            probe.error, probe.failures, probe.retry_at = None, 0, 0.0

    def known(self, index: int, late: str | None = None) -> ReplicaHealth:
        """What is known of replica `index`, without asking it; `late`: why a probe is late."""
        state = self.state.states[index]
        status: Status = state.status
        error = state.error
        if late is not None and status != "unavailable":
            status, error = "unavailable", late
        known = state.lag if status != "unavailable" else None
        return {
            "name": state.name,
            "status": status,
            "in_recovery": known.in_recovery if known else None,
            "lag_s": round(known.seconds, 3) if known and known.seconds is not None else None,
            "behind_bytes": known.behind_bytes if known else None,
            "latency_ms": None,
            "ssl": None,
            "error": error,
            "pool": pool_status(self.engines[index]),
        }

    def probe_one(self, index: int) -> ReplicaHealth:
        engine = self.engines[index]
        started = perf_counter()
        latency_ms: float | None = None
        ssl: bool | None = None
        try:
            with engine.connect() as connection:
                lag = measure_lag(connection)
                ssl = connection_uses_tls(connection)
            latency_ms = round((perf_counter() - started) * 1000, 3)
            self.state.measured(index, lag)
        except SQLAlchemyError as error:
            self.state.unavailable(index, error)
        return {**self.known(index), "latency_ms": latency_ms, "ssl": ssl}
