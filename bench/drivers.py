"""Drivers side by side, a section of `python -m bench` (`--only drivers` runs it alone).

On the same server, in the same interleaved rounds: `SessionDep` on psycopg2 and on psycopg 3,
`AsyncSessionDep` on asyncpg and on psycopg 3, each next to a bare connection of the same
engine (`/bare-sync`, `/bare-async`), so of the same driver. Each driver runs in servers of its
own, chosen as in production by their environment (the URL's scheme, DATABASE_ASYNC_DRIVER),
and checked at `/driver` before anything is measured. Printed: each driver's layer / bare
ratio, which is the layer's own cost on that driver, and the drivers against each other.

Then prepared statements through a transaction-mode pooler: psycopg 3 with its statement cache
on (prepare_threshold 5, psycopg's default) against off (None, what the layer sets behind a
pooler), through a PgBouncer that keeps prepared statements (>= 1.21, max_prepared_statements).
An older PgBouncer cannot: the section says so and measures nothing. Measured on routes that
commit: psycopg clears its cache at every ROLLBACK (psycopg/_connection_base.py,
`_rollback_gen`), so a request that ends in one, as every read does, can never reuse a
prepared statement whatever the threshold.
"""

import json
import re
import shutil
import subprocess
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.util import find_spec

from backend.testing.pgbouncer import PgBouncer, pgbouncer_binary
from backend.testing.postgres import TestServer
from bench.harness import Run, interleaved, served
from bench.targets import Target, at_least, over, shown

LOADS = (16, 64)
LAYER_GOAL = 0.90  # AsyncSessionDep / bare connection of its driver, c=64
PREPARED_SINCE = (1, 21)  # PgBouncer's protocol-level prepared statements
PSYCOPG_THRESHOLD = 5  # psycopg 3's default prepare_threshold


@dataclass(frozen=True)
class Driver:
    name: str  # as printed
    flavour: str  # "sync" (SessionDep) or "async" (AsyncSessionDep)
    tag: str  # the query string that tells its servers' rows apart
    sync_driver: str | None = None  # the URL's scheme: postgresql+<this>
    async_driver: str | None = None  # DATABASE_ASYNC_DRIVER

    @property
    def layer(self) -> str:
        return f"/{self.flavour}?{self.tag}"

    @property
    def bare(self) -> str:
        return f"/bare-{self.flavour}?{self.tag}"

    @property
    def dependency(self) -> str:
        return "SessionDep" if self.flavour == "sync" else "AsyncSessionDep"

    @property
    def expected(self) -> str:
        """What /driver answers for this flavour's engine."""
        return (self.sync_driver if self.flavour == "sync" else self.async_driver) or ""


PSYCOPG2 = Driver("psycopg2", "sync", "psycopg2", sync_driver="psycopg2")
PSYCOPG = Driver("psycopg 3", "sync", "psycopg", sync_driver="psycopg")
ASYNCPG = Driver("asyncpg", "async", "asyncpg", async_driver="asyncpg")
PSYCOPG_ASYNC = Driver("psycopg 3", "async", "psycopg-async", async_driver="psycopg")
DRIVERS = (PSYCOPG2, PSYCOPG, ASYNCPG, PSYCOPG_ASYNC)
# Each pair: the second driver's req/s over the first's, for the layer and for the bare floor.
AGAINST = ((PSYCOPG2, PSYCOPG), (ASYNCPG, PSYCOPG_ASYNC))


def has_psycopg() -> bool:
    return find_spec("psycopg") is not None


def check_driver(port: int, driver: Driver) -> None:
    """The server on `port` runs the driver it is measured as (its environment reached it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/driver", timeout=10) as answer:
        built = json.load(answer)
    if built[driver.flavour] != driver.expected:
        raise RuntimeError(f"{driver.layer}: the server built {built}, not {driver.expected}")


def side_by_side(database: TestServer, seconds: int, rounds: int) -> dict[int, dict[str, Run]]:
    drivers = DRIVERS if has_psycopg() else (PSYCOPG2, ASYNCPG)
    if not has_psycopg():
        print("\npsycopg is not installed (pip install -e '.[psycopg]'): psycopg 3 rows skipped")
    results: dict[int, dict[str, Run]] = {}
    for connections in LOADS:
        with ExitStack() as servers:  # fresh servers per load, as the other sections
            ports: dict[str, int] = {}
            for driver in drivers:
                # Straight to PostgreSQL over TLS, as the other throughput tables.
                mine = servers.enter_context(
                    served(
                        database.url("bench", "direct"),
                        [driver.layer, driver.bare],
                        sync_driver=driver.sync_driver,
                        async_driver=driver.async_driver,
                    )
                )
                check_driver(mine[driver.layer], driver)
                ports |= mine
            results[connections] = interleaved(ports, connections, seconds, rounds)
            print_side_by_side(connections, results[connections], drivers)
    return results


def rate(results: dict[str, Run], route: str) -> float | None:
    return results[route].requests_per_second if route in results else None


def figure(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def print_side_by_side(
    connections: int, results: dict[str, Run], drivers: tuple[Driver, ...]
) -> None:
    print(
        f"\ndrivers side by side, c={connections}: TLS straight to PostgreSQL, uvicorn 1 worker, "
        "pool 10; each layer row over the bare connection of its driver"
    )
    print(
        f"  {'route':16} {'driver':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'layer/bare':>10}"
    )
    for driver in drivers:
        for route, name in ((driver.layer, driver.dependency), (driver.bare, "bare connection")):
            run = results[route]
            if not run.requests_per_second:
                print(f"  {name:16} {driver.name:10} {0:9.0f}  stalled ({run.errors} errors)")
                continue
            layer_over_bare = over(rate(results, driver.layer), rate(results, driver.bare))
            shown_ratio = figure(layer_over_bare) if route == driver.layer else ""
            print(
                f"  {name:16} {driver.name:10} {run.requests_per_second:9.0f} "
                f"{run.p50_ms:8.2f} {run.p99_ms:8.2f} {run.errors:6} {shown_ratio:>10}"
            )
    for first, second in AGAINST:
        if second not in drivers:
            continue
        layer = over(rate(results, second.layer), rate(results, first.layer))
        bare = over(rate(results, second.bare), rate(results, first.bare))
        print(
            f"  {second.name} / {first.name}, req/s: {first.dependency} {figure(layer)}, "
            f"bare connection {figure(bare)}"
        )


def side_by_side_targets(results: dict[int, dict[str, Run]]) -> list[Target]:
    """AsyncSessionDep over its driver's bare connection at c=64, judged for each async driver;
    every other layer / bare ratio shown."""
    targets = []
    for connections in LOADS:
        measured = results.get(connections, {})
        for driver in DRIVERS:
            name = (
                f"{driver.dependency} / bare connection of its driver, req/s, "
                f"c={connections}, {driver.name}"
            )
            layer_over_bare = over(rate(measured, driver.layer), rate(measured, driver.bare))
            if driver.flavour == "async" and connections == 64:
                targets.append(at_least(name, LAYER_GOAL, layer_over_bare))
            else:
                targets.append(shown(name, layer_over_bare))
    return targets


def pgbouncer_version() -> tuple[int, ...] | None:
    binary = pgbouncer_binary()
    if binary is None:
        return None
    said = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    found = re.match(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", said.stdout)
    return tuple(int(part) for part in found.groups("0")) if found else None


class PreparingPgBouncer(PgBouncer):
    """The suite's PgBouncer, keeping up to 100 prepared statements per server connection."""

    def _config(self) -> str:
        # Overrides the suite's private config writer: it has no hook for an extra setting,
        # and this one setting is all that differs. The [pgbouncer] section is its last.
        return super()._config() + "max_prepared_statements = 100\n"


def prepared_through_pooler(
    database: TestServer, seconds: int, rounds: int
) -> dict[int, dict[str, Run]]:
    """psycopg 3 through PgBouncer (transaction mode): SessionDep and AsyncSessionDep with
    prepare_threshold on against off, where that PgBouncer can keep prepared statements."""
    found = pgbouncer_version()
    title = "prepared statements through PgBouncer (transaction mode)"
    if found is None or database.pooler is None:
        print(f"\n{title}: not measured, no PgBouncer here")
        return {}
    if found < PREPARED_SINCE:
        print(
            f"\n{title}: not measured: PgBouncer {'.'.join(map(str, found))} here, and the "
            f"measurement needs PgBouncer >= {'.'.join(map(str, PREPARED_SINCE))} "
            "(max_prepared_statements); the layer keeps psycopg 3's statement cache off behind "
            "the pooler (prepare_threshold=None)"
        )
        return {}
    if not has_psycopg():
        print(f"\n{title}: not measured, psycopg is not installed")
        return {}
    pooler = PreparingPgBouncer(
        database.pooler.upstream_port,
        database.pooler.password,
        database.pooler.certificate,
        database.pooler.key,
        database.pooler.server_tls,
    )
    pooler.start()
    results: dict[int, dict[str, Run]] = {}
    try:
        url = database.url("bench", "pooler").set(port=pooler.port)
        for connections in LOADS:
            with ExitStack() as servers:
                ports: dict[str, int] = {}
                for cache in ("off", "on"):
                    env = {"DATABASE_POOLER": "pgbouncer"}  # 127.0.0.1 is no -pooler host
                    if cache == "on":
                        env["BENCH_PREPARE_THRESHOLD"] = str(PSYCOPG_THRESHOLD)
                    ports |= servers.enter_context(
                        served(
                            url,
                            [f"/sync-commit?prepare-{cache}", f"/async-commit?prepare-{cache}"],
                            sync_driver="psycopg",
                            async_driver="psycopg",
                            env=env,
                        )
                    )
                results[connections] = interleaved(ports, connections, seconds, rounds)
                print_prepared(title, connections, results[connections])
    finally:
        pooler.stop()
    return results


def print_prepared(title: str, connections: int, results: dict[str, Run]) -> None:
    print(
        f"\n{title}, psycopg 3, c={connections}: prepare_threshold {PSYCOPG_THRESHOLD} (on) "
        "against None (off, the layer's setting behind a pooler); routes that commit, as a "
        "ROLLBACK clears psycopg's cache"
    )
    print(
        f"  {'route':22} {'cache':6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'on/off':>7}"
    )
    for flavour, name in (("sync", "SessionDep commit"), ("async", "AsyncSessionDep commit")):
        for cache in ("off", "on"):
            run = results[f"/{flavour}-commit?prepare-{cache}"]
            on_over_off = over(
                rate(results, f"/{flavour}-commit?prepare-on"),
                rate(results, f"/{flavour}-commit?prepare-off"),
            )
            shown_ratio = figure(on_over_off) if cache == "on" else ""
            print(
                f"  {name:22} {cache:6} {run.requests_per_second:9.0f} {run.p50_ms:8.2f} "
                f"{run.p99_ms:8.2f} {run.errors:6} {shown_ratio:>7}"
            )


def section(database: TestServer, seconds: int, rounds: int) -> list[Target]:
    """The whole section: drivers side by side, then prepared statements through the pooler."""
    if not shutil.which("wrk"):
        print("\nwrk is not installed (apt-get install wrk): drivers side by side skipped")
        return side_by_side_targets({})
    results = side_by_side(database, seconds, rounds)
    prepared_through_pooler(database, seconds, rounds)
    return side_by_side_targets(results)
