"""`python -m bench.replicas`: read replicas, measured in one run, as ratios.

It starts the tests' replication stand-in (a TLS-only primary and a streaming standby of it,
tests/replicas/standby.py) and serves this module's app with uvicorn (one worker):

1. reads through the replica vs through the primary, while threads write to the primary
   without a pause: wrk on the same read route of two servers, one with DATABASE_READ_URL
   and one without, interleaved (A B A B …), medians;
2. the standby stopped (`pg_ctl stop -m fast`) under a loop of reads: the time until a read
   is answered by the primary, the reads that failed meanwhile; then the standby started
   again: the time until a read is answered by the standby again.
"""

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter, FastAPI
from sqlalchemy.engine import URL

from backend import AsyncReadSessionDep, ReadSessionDep
from backend.embedded import free_port
from backend.main import create_app
from bench.harness import ROOT, Run, wrk
from tests.replicas.standby import Cluster, replication_cluster

DATABASE = "bench"
# A page of the newest rows: what a list endpoint reads.
PAGE = sa.text("SELECT id, payload FROM bench_item ORDER BY id DESC LIMIT 20")
WHERE = sa.text("SELECT pg_is_in_recovery()")
WRITE = sa.text(
    "INSERT INTO bench_item (payload) SELECT md5(random()::text) FROM generate_series(1, :rows)"
)
router = APIRouter()


@router.get("/read")
@inject
async def read(session: AsyncReadSessionDep) -> int:
    return len((await (await session.connection()).execute(PAGE)).all())


@router.get("/read-sync")
@inject
def read_sync(session: ReadSessionDep) -> int:
    return len(session.connection().execute(PAGE).all())


@router.get("/where")
@inject
async def where(session: AsyncReadSessionDep) -> bool:
    return bool(await (await session.connection()).scalar(WHERE))


@router.get("/where-sync")
@inject
def where_sync(session: ReadSessionDep) -> bool:
    return bool(session.connection().scalar(WHERE))


def make_app() -> FastAPI:
    return create_app(routers=[router], wire=[__name__])


@contextmanager
def served(primary: URL, replica: URL | None) -> Iterator[int]:
    """This module's app under uvicorn (one worker), reading from `replica` if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    env["DATABASE_URL"] = primary.render_as_string(hide_password=False)
    if replica is not None:
        env["DATABASE_READ_URL"] = replica.render_as_string(hide_password=False)
    port = free_port()
    # The server's own lines (the layer logs to stderr): shown if it does not come up.
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "bench.replicas:make_app",
             "--port", str(port), "--log-level", "critical", "--no-access-log"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:  # up, and its pools warm
                    for route in ("/read", "/read-sync"):
                        urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        log.seek(0)
                        print(log.read()[-3000:], file=sys.stderr)
                        raise
                    time.sleep(0.1)
            yield port
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


class Writers:
    """Threads that write to the primary at a steady pace: 50 rows per transaction, `rate`
    rows a second in all (as fast as they can if the machine cannot keep up; 0: none)."""

    BATCH = 50

    def __init__(self, url: URL, rate: int, threads: int = 2) -> None:
        self.engine = sa.create_engine(url, pool_size=threads)
        self.rows = 0
        self._pause = threads * self.BATCH / rate if rate else 0.0
        self._stop = threading.Event()
        count = threads if rate else 0
        self._threads = [threading.Thread(target=self._write, daemon=True) for _ in range(count)]

    def _write(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            with self.engine.begin() as connection:
                connection.execute(WRITE, {"rows": self.BATCH})
            self.rows += self.BATCH
            due += self._pause
            self._stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> "Writers":
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.per_second = self.rows / (time.monotonic() - self.started)
        self.engine.dispose()


def under_writes(
    cluster: Cluster, route: str, connections: int, seconds: int, rounds: int, rate: int
) -> tuple[dict[str, Run], float]:
    primary = cluster.url(cluster.primary, DATABASE)
    replica = cluster.url(cluster.standbys[0], DATABASE)
    runs: dict[str, list[Run]] = {"primary": [], "replica": []}
    with (
        served(primary, None) as on_primary,
        served(primary, replica) as on_replica,
        Writers(primary, rate) as writing,
    ):
        for _ in range(rounds):
            runs["primary"].append(wrk(on_primary, route, connections, seconds))
            runs["replica"].append(wrk(on_replica, route, connections, seconds))
    medians = {
        name: Run(
            statistics.median(r.requests_per_second for r in done),
            statistics.median(r.p50_ms for r in done),
            statistics.median(r.p99_ms for r in done),
            sum(r.errors for r in done),
        )
        for name, done in runs.items()
    }
    return medians, writing.per_second


class ReadLoop(threading.Thread):
    """Reads `route` without a pause over HTTP; records (when, status, answered by a standby)."""

    def __init__(self, port: int, route: str) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}{route}"
        self.answers: list[tuple[float, int, bool | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=30) as response:  # noqa: S310
                    body = response.read()
                self.answers.append((time.monotonic(), response.status, body == b"true"))
            except urllib.error.HTTPError as error:
                self.answers.append((time.monotonic(), error.code, None))

    def first(self, after: float, on_standby: bool) -> float:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for when, status, standby in list(self.answers):
                if when > after and status == 200 and standby is on_standby:
                    return when
            time.sleep(0.01)
        raise TimeoutError(f"no read answered by {'the standby' if on_standby else 'primary'}")


def failover(cluster: Cluster, route: str) -> dict[str, Any]:
    standby = cluster.standbys[0]
    primary = cluster.url(cluster.primary, DATABASE)
    with served(primary, cluster.url(standby, DATABASE)) as port:
        loop = ReadLoop(port, route)
        loop.start()
        try:
            time.sleep(2)  # reads flow, from the standby
            stopped = time.monotonic()
            standby.stop()
            to_primary = loop.first(stopped, on_standby=False) - stopped
            time.sleep(3)  # down a while: the back-off grows (1, 2 s …)
            started = time.monotonic()
            standby.start()
            up = time.monotonic()
            back = loop.first(up, on_standby=True)
        finally:
            loop.stopping.set()
            loop.join(60)
            if not standby.is_running():
                standby.start()
    failed = [status for when, status, _ in loop.answers if status != 200]
    during = [a for a in loop.answers if stopped < a[0] < up]
    return {
        "death_to_primary_s": to_primary,
        "start_command_s": up - started,
        "start_to_standby_s": back - up,
        "reads": len(loop.answers),
        "reads_while_down": len(during),
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per figure")
    parser.add_argument("--connections", type=int, default=16, help="wrk's connections")
    parser.add_argument(
        "--write-rate", type=int, default=5000, help="rows a second written to the primary"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    with replication_cluster(standbys=1) as cluster:
        with cluster.engine(cluster.primary).connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {DATABASE}")
            version = connection.exec_driver_sql("SHOW server_version").scalar()
        with cluster.engine(cluster.primary, DATABASE).connect() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE bench_item (id bigserial PRIMARY KEY, payload text NOT NULL)"
            )
            connection.exec_driver_sql(
                "INSERT INTO bench_item (payload)"
                " SELECT md5(i::text) FROM generate_series(1, 100000) AS i"
            )
        cluster.wait_until_replayed(cluster.standbys[0])
        print(f"PostgreSQL {version}: a TLS-only primary and a streaming standby, one machine")

        loads = [
            (route, rate) for rate in (0, args.write_rate) for route in ("/read", "/read-sync")
        ]
        for route, rate in loads if shutil.which("wrk") else []:
            results, written = under_writes(
                cluster, route, args.connections, args.seconds, args.rounds, rate
            )
            base = results["primary"]
            load = f"while {written:.0f} rows/s are written to the primary" if rate else "no writes"
            print(f"\n{route} (the 20 newest rows), c={args.connections}, {load}")
            print(f"  {'reads from':10} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
                  f"{'req/s x':>8} {'p50 x':>6} {'errors':>6}")  # fmt: skip
            for name, run in results.items():
                ratio = run.requests_per_second / base.requests_per_second
                print(
                    f"  {name:10} {run.requests_per_second:8.0f} {run.p50_ms:7.2f} "
                    f"{run.p99_ms:7.2f} {ratio:8.2f} {run.p50_ms / base.p50_ms:6.2f} "
                    f"{run.errors:6}"
                )
        if not shutil.which("wrk"):
            print("\nwrk is not installed (apt-get install wrk): the load figures are skipped")

        for route in ("/where", "/where-sync"):
            figures = failover(cluster, route)
            print(f"\nstandby stopped under a read loop ({route}, one client, no pause)")
            print(
                f"  death -> first read from the primary: {figures['death_to_primary_s']:.2f} s;"
                f" reads while it was down: {figures['reads_while_down']},"
                f" failed: {len(figures['failed'])} {figures['failed'] or ''}"
            )
            print(
                f"  pg_ctl start took {figures['start_command_s']:.2f} s; then -> first read "
                f"from the standby: {figures['start_to_standby_s']:.2f} s"
            )


if __name__ == "__main__":
    main()
