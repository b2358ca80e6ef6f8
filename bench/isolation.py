"""`python -m bench.isolation`: what per-test isolation costs, by mode, and the sample suite's
wall time (the figures in docs/performance.md).

Per test, in one run, interleaved (transaction, database, naive, transaction, …) so that a
noisy machine weighs on every mode alike:
- transaction: the plugin's default; the test's connection joins one transaction, rolled back;
- database: a clone of the template per test (CREATE DATABASE … TEMPLATE), dropped after;
- naive: what users write by hand, `create_all()` before each test and `drop_all()` after,
  on one database.
Each "test" binds one container (the app's) to its database as the plugin does, writes a row
through a session and commits, and reads it back through a read session. Setup and teardown
are timed apart from that body; their sum is the isolation overhead: what a test waits for.
Database mode makes its clones one ahead and drops them in the background, so what it waits
for depends on how long the previous test ran; the clone and the drop themselves are timed
apart too.

Then the sample suite (examples/store: ten tables, 200 tests, half sync, half async, all
writing through routes) runs with pytest-xdist's `-n 1` and `-n 2`, in each mode.
"""

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import SQLModel, select

from backend import Container
from backend.testing.databases import Databases, TestDatabase
from backend.testing.postgres import TestServer, run_test_server

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "store"
MODES = ("transaction", "database", "naive")


@dataclass
class Timings:
    setup: list[float] = field(default_factory=list)
    body: list[float] = field(default_factory=list)
    teardown: list[float] = field(default_factory=list)

    def overhead(self) -> list[float]:
        return [s + t for s, t in zip(self.setup, self.teardown, strict=True)]

    def whole(self) -> list[float]:
        return [o + b for o, b in zip(self.overhead(), self.body, strict=True)]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def body(container: Container, row: Callable[[str], SQLModel], name: str) -> None:
    """A test's work: a write committed through a session, then a read."""
    with container.session_maker()() as session:
        session.add(row(name))
        session.commit()
    with container.read_session_maker()() as reads:
        assert name in reads.exec(select(type(row(name)).name)).all()  # type: ignore[attr-defined]


class Isolation:
    """One mode's setup and teardown around a test, on `databases`."""

    def __init__(self, mode: str, server: TestServer, databases: Databases) -> None:
        self.mode = mode
        self.server = server
        self.databases = databases
        self.schema = SQLModel.metadata.create_all
        if mode == "transaction":
            self.engine = databases.outer_engine(self.schema)
        if mode == "naive":
            self.naive = databases.clone(self.schema)
            self.engine = sa.create_engine(server.url(self.naive))
            SQLModel.metadata.drop_all(self.engine)

    def setup(self, container: Container) -> TestDatabase:
        if self.mode == "transaction":
            name = self.databases.shared(self.schema)
            database = TestDatabase(
                name, self.server.url(name), "transaction", outer_engine=self.engine
            )
        elif self.mode == "database":
            name = self.databases.clone(self.schema)
            database = TestDatabase(name, self.server.url(name), "database")
        else:
            SQLModel.metadata.create_all(self.engine)
            database = TestDatabase(self.naive, self.server.url(self.naive), "database")
        database.bind(container)
        return database

    def teardown(self, container: Container, database: TestDatabase) -> None:
        database.close()
        for engine in container.built_engines():  # what the app's shutdown does
            engine.dispose()
        if self.mode == "database":
            self.databases.drop(database.name)
        elif self.mode == "naive":
            SQLModel.metadata.drop_all(self.engine)


def measure(iterations: int, block: int = 10) -> tuple[dict[str, Timings], list[float]]:
    """Per-mode timings, and what a clone plus its drop take by themselves.

    Modes take turns in blocks of `block` consecutive tests, so that database mode's clone
    made ahead overlaps its own previous test only, as in a suite of its own; the first test
    of each block, which overlapped another mode's, is not counted.
    """
    sys.path.insert(0, str(SAMPLE))
    # The sample's ten tables join SQLModel.metadata (a package outside this one's tree).
    customer = importlib.import_module("store.models").Customer

    timings = {mode: Timings() for mode in MODES}
    clone_and_drop = []
    with tempfile.TemporaryDirectory() as work, run_test_server(Path(work)) as server:
        databases = Databases(server, "bench")
        try:
            modes = [Isolation(mode, server, databases) for mode in MODES]
            container = Container()
            count = 0
            rounds = -(-iterations // (block - 1)) + 1  # the first round warms up
            for round_ in range(rounds):
                for isolation in modes:
                    for index in range(block):
                        started = time.perf_counter()
                        database = isolation.setup(container)
                        set_up = time.perf_counter()
                        body(container, lambda name: customer(name=name), f"c-{count}")
                        ran = time.perf_counter()
                        isolation.teardown(container, database)
                        ended = time.perf_counter()
                        count += 1
                        timing = timings[isolation.mode]
                        if round_ > 0 and index > 0 and len(timing.setup) < iterations:
                            timing.setup.append(set_up - started)
                            timing.body.append(ran - set_up)
                            timing.teardown.append(ended - ran)
            template = databases.template(SQLModel.metadata.create_all)
            for index in range(iterations):  # the clone and the drop, waited for
                started = time.perf_counter()
                name = databases._clone(template, f"bench_clone_{index}")
                databases._drop(name)
                clone_and_drop.append(time.perf_counter() - started)
        finally:
            databases.close()
    return timings, clone_and_drop


def suite_wall_time(mode: str, workers: int) -> tuple[float, str]:
    env = {**os.environ, "STORE_ISOLATION": mode}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers)],
        cwd=SAMPLE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    return elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.isolation", description=__doc__)
    parser.add_argument("--iterations", type=int, default=100, help="tests timed per mode")
    parser.add_argument("--no-suite", action="store_true", help="skip the sample suite runs")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")

    timings, clone_and_drop = measure(args.iterations)
    print(f"\nper test, {args.iterations} tests per mode, milliseconds")
    print("| mode | overhead median | overhead p95 | whole test median | whole test p95 |")
    print("|---|---|---|---|---|")
    for mode, timing in timings.items():
        overhead, whole = timing.overhead(), timing.whole()
        print(
            f"| {mode} | {statistics.median(overhead) * 1000:.2f} | {p95(overhead) * 1000:.2f} "
            f"| {statistics.median(whole) * 1000:.2f} | {p95(whole) * 1000:.2f} |"
        )
    print(
        f"\na clone and its drop, waited for: median {statistics.median(clone_and_drop) * 1000:.2f}"
        f" ms, p95 {p95(clone_and_drop) * 1000:.2f} ms (database mode does them in the background)"
    )

    if args.no_suite:
        return
    print("\nthe sample suite (examples/store, 200 tests), wall time in seconds")
    print("| mode | -n 1 | -n 2 |")
    print("|---|---|---|")
    for mode in MODES:
        cells = []
        for workers in (1, 2):
            elapsed, summary = suite_wall_time(mode, workers)
            if "200 passed" not in summary:
                raise SystemExit(f"{mode} -n {workers}: {summary}")
            cells.append(f"{elapsed:.1f}")
        print(f"| {mode} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
