"""`python -m bench`: measure the layer against the tutorial baseline, in one run, as ratios.

It starts the Neon stand-in of backend.testing (a TLS-only PostgreSQL and the TLS front), serves
bench/app.py with uvicorn (one worker), and drives it with wrk: throughput straight to
PostgreSQL over TLS (no Python proxy on the cores it measures), round trips, WAN latency and
the first request through the front; then the drivers side by side (bench/drivers.py). Runs
are interleaved (A B A B…) so that drift on a noisy machine falls on every route alike; each
figure is the median of the rounds. Parts whose tools are missing are skipped, saying so.
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend.testing.postgres import TestServer, run_test_server
from bench import drivers
from bench.app import LARGE_POOL
from bench.harness import ROOT, Run, interleaved, served, wrk
from bench.targets import Target, at_least, at_most, over, print_targets

ROUTES = ["/baseline", "/sync", "/async", "/read", "/async-read", "/bare-async"]
SESSION_GOAL = 1.25  # SessionDep / tutorial on the same pool of 10, c=16 and c=64


def print_http_table(title: str, results: dict[str, Run], baseline: str = "/baseline") -> None:
    base = results[baseline]

    def ratio(ours: float, theirs: float) -> str:
        # A stalled baseline answered nothing: no ratio to show.
        return f"{ours / theirs:.2f}" if base.requests_per_second and theirs else "-"

    print(f"\n{title}")
    print(
        f"  {'route':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'req/s x':>8} "
        f"{'p50 x':>7} {'p99 x':>7} {'errors':>6}"
    )
    for route, run in results.items():
        if not run.requests_per_second:
            print(f"  {route:16} {0:9.0f}  stalled: no request answered ({run.errors} errors)")
            continue
        print(
            f"  {route:16} {run.requests_per_second:9.0f} {run.p50_ms:8.2f} {run.p99_ms:8.2f} "
            f"{ratio(run.requests_per_second, base.requests_per_second):>8} "
            f"{ratio(run.p50_ms, base.p50_ms):>7} {ratio(run.p99_ms, base.p99_ms):>7} "
            f"{run.errors:6}"
        )


def round_trips(database: TestServer, name: str) -> dict[str, float]:
    """Client-to-server flights per warm request, counted at the TLS front."""
    assert database.front is not None
    os.environ["DATABASE_URL"] = database.url(name, "front").render_as_string(hide_password=False)
    from bench.app import build  # built here, with DATABASE_URL pointing at the front

    counts = {}
    with TestClient(build()) as client:
        for route in ROUTES:
            for _ in range(5):
                client.get(route).raise_for_status()
            database.front.reset_traffic()
            for _ in range(50):
                client.get(route).raise_for_status()
            counts[route] = database.front.traffic.flights_up / 50
    del os.environ["DATABASE_URL"]
    return counts


COLD_BASE = "import fastapi, sqlmodel"
COLD_OURS = "import backend.main\nfrom backend import Container\nContainer().settings()"


def cold_path(url: URL, runs: int = 7) -> tuple[float, float, float, float]:
    """Seconds to import fastapi + sqlmodel alone, and to import backend.main and build the
    container (no connection can be opened: the socket module refuses), each the median of
    fresh interpreters run alternately; then the first and second request on an idle pool."""

    def timed(code: str) -> float:
        program = (
            "import socket, time\nsocket.socket.connect = None\n"
            f"started = time.perf_counter()\n{code}\nprint(time.perf_counter() - started)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", program], env=env, capture_output=True, text=True,
            check=True, cwd=ROOT,
        )  # fmt: skip
        return float(result.stdout)

    env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
    base, ours = [], []
    for _ in range(runs):
        base.append(timed(COLD_BASE))
        ours.append(timed(COLD_OURS))
    os.environ["DATABASE_URL"] = env["DATABASE_URL"]
    from bench.app import build

    with TestClient(build()) as client:
        started = time.perf_counter()
        client.get("/sync").raise_for_status()
        first = time.perf_counter() - started
        started = time.perf_counter()
        client.get("/sync").raise_for_status()
        second = time.perf_counter() - started
    del os.environ["DATABASE_URL"]
    return statistics.median(base), statistics.median(ours), first, second


SCALING = (1, 4, 16, 64, 256)
THROUGHPUT_ROUTES = [
    "/baseline", "/baseline-large", "/sync", "/async", "/read", "/async-read", "/bare-async",
]  # fmt: skip


def scaling(database: TestServer, seconds: int) -> dict[str, dict[int, Run]]:
    """req/s, p99 and the longest wait of SessionDep and AsyncSessionDep at each load, on the
    default pool of 10 (5 + 5 overflow)."""
    table: dict[str, dict[int, Run]] = {"/sync": {}, "/async": {}}
    with served(database.url("bench"), list(table)) as ports:
        for connections in SCALING:
            for route, port in ports.items():
                table[route][connections] = wrk(port, route, connections, seconds)
    return table


def print_scaling(table: dict[str, dict[int, Run]], pool_timeout_ms: float) -> None:
    print("\nscaling on a pool of 10 (5 + 5), uvicorn 1 worker")
    print(
        f"  {'route':8} {'c':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>6}"
    )
    for route, runs in table.items():
        for connections, run in runs.items():
            print(
                f"  {route:8} {connections:4} {run.requests_per_second:8.0f} {run.p50_ms:8.2f} "
                f"{run.p99_ms:8.2f} {run.max_ms:8.1f} {run.errors:6}"
            )
    longest = max(run.max_ms for runs in table.values() for run in runs.values())
    print(f"  longest wait {longest:.0f} ms; pool_timeout {pool_timeout_ms:.0f} ms")


def plot_scaling(table: dict[str, dict[int, Run]], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): plot skipped"
    figure, (rate, tail) = plt.subplots(1, 2, figsize=(10, 4))
    names = {"/sync": "SessionDep", "/async": "AsyncSessionDep"}
    for route, runs in table.items():
        levels = list(runs)
        rate.plot(levels, [runs[c].requests_per_second for c in levels], "o-", label=names[route])
        tail.plot(levels, [runs[c].p99_ms for c in levels], "o-", label=names[route])
    for axis, label in ((rate, "req/s"), (tail, "p99 latency, ms")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(SCALING), [str(c) for c in SCALING])
        axis.set_xlabel("concurrent clients (wrk -c)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend()
    tail.set_yscale("log")
    figure.suptitle("SELECT 1 through the session, pool of 10, one uvicorn worker")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return f"plot saved: {path.relative_to(ROOT)}"


@dataclass
class RequestPath:
    """What the request-path part measured: throughput by load, WAN latency by load, the
    scaling table, and the cold path's ratio."""

    throughput: dict[int, dict[str, Run]]
    wan: dict[int, dict[str, Run]]
    scaling: dict[str, dict[int, Run]]
    cold: float


def request_path(database: TestServer, seconds: int, rounds: int) -> RequestPath:
    trips = round_trips(database, "bench")
    print("\nround trips per warm request (client-to-server flights at the TLS front)")
    for route, count in trips.items():
        print(f"  {route:12} {count:5.2f}")

    base, ours, first, second = cold_path(database.url("bench"))
    measured = RequestPath({}, {}, {}, ours / base)
    print(
        f"\ncold path: import fastapi + sqlmodel {base * 1000:.0f} ms; import backend.main "
        f"+ Container() {ours * 1000:.0f} ms ({measured.cold:.2f}x, no connection opened); "
        f"first request on an idle pool {first * 1000:.1f} ms, the next {second * 1000:.1f} ms"
    )
    if not shutil.which("wrk"):
        print("\nwrk is not installed (apt-get install wrk): HTTP benchmarks skipped")
        return measured
    for connections in (16, 64):
        routes = THROUGHPUT_ROUTES + (["/baseline-untyped"] if connections == 64 else [])
        # Straight to PostgreSQL over TLS: no Python proxy on the cores being measured.
        with served(database.url("bench", "direct"), routes) as ports:  # fresh per load
            measured.throughput[connections] = interleaved(ports, connections, seconds, rounds)
            print_http_table(
                f"TLS straight to PostgreSQL, c={connections}, uvicorn 1 worker, pool 10 "
                f"(/baseline-large: pool {LARGE_POOL})",
                measured.throughput[connections],
            )
    assert database.front is not None
    database.front.latency = 0.001
    with served(database.url("bench", "front"), ROUTES[:5]) as ports:
        for connections in (1, 4):
            measured.wan[connections] = interleaved(ports, connections, seconds, rounds)
            print_http_table(
                f"WAN mode (TLS front, 1 ms each way), c={connections}", measured.wan[connections]
            )
    database.front.latency = 0
    measured.scaling = scaling(database, seconds)
    print_scaling(measured.scaling, 30_000)
    print(plot_scaling(measured.scaling, ROOT / "docs" / "img" / "scaling.png"))
    if 64 in measured.throughput:
        stalled = measured.throughput[64]["/baseline"]
        print(
            f"\ntutorial at c=64 on the pool of 10: {stalled.requests_per_second:.0f} req/s, "
            f"{stalled.errors} errors (returns int: FastAPI validates it in the threadpool); "
            f"the same without a return annotation: "
            f"{measured.throughput[64]['/baseline-untyped'].requests_per_second:.0f} req/s"
        )
    return measured


def request_path_targets(measured: RequestPath) -> list[Target]:
    results, wan, table = measured.throughput, measured.wan, measured.scaling
    targets = []

    def rps(c: int, route: str) -> float | None:
        return results[c][route].requests_per_second if c in results else None

    for c in (16, 64):
        name = f"SessionDep / tutorial, req/s, c={c}"
        targets.append(
            # A tutorial that stalled served nothing: ours served it, which meets the target.
            Target(name, f">= {SESSION_GOAL:.2f}", None, True, "tutorial stalled")
            if rps(c, "/baseline") == 0
            else at_least(name, SESSION_GOAL, over(rps(c, "/sync"), rps(c, "/baseline")))
        )
        targets.append(
            at_least(
                f"SessionDep / tutorial on a pool of {LARGE_POOL}, req/s, c={c}",
                1.15,
                over(rps(c, "/sync"), rps(c, "/baseline-large")),
            )
        )
    targets.append(
        at_least(
            "AsyncSessionDep / SessionDep, req/s, c=64",
            1.3,
            over(rps(64, "/async"), rps(64, "/sync")),
        )
    )
    p50 = {route: run.p50_ms for route, run in wan.get(1, {}).items()}
    for route, name, goal in (
        ("/sync", "SessionDep / tutorial (pre-ping)", 0.75),
        ("/read", "ReadSessionDep / tutorial", 0.45),
        ("/async-read", "AsyncReadSessionDep / tutorial", 0.45),
    ):
        targets.append(
            at_most(f"WAN p50 c=1: {name}", goal, over(p50.get(route), p50.get("/baseline")))
        )
    scaled = [run for runs in table.values() for run in runs.values()]
    targets.append(
        at_most(
            "scaling c=1..256, pool 10: errors",
            0,
            float(sum(r.errors for r in scaled)) if scaled else None,
        )
    )
    targets.append(
        at_most(
            "scaling: longest wait / pool_timeout (30 s)",
            1.0,
            max(r.max_ms for r in scaled) / 30_000 if scaled else None,
        )
    )
    targets.append(
        at_most("cold path: backend.main + Container() / fastapi + sqlmodel", 1.3, measured.cold)
    )
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=3, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per figure")
    parser.add_argument(
        "--only",
        choices=["drivers"],
        help="run one section alone: drivers = the drivers side by side and prepared "
        "statements through PgBouncer",
    )
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} before the run"
    )
    print("versions: " + ", ".join(f"{name} {installed(name)}" for name in VERSIONS))
    targets: list[Target] = []

    if args.only is None:
        from bench.overhead import PROFILED, measure_overhead, print_overhead

        costs, profile = measure_overhead(5000, PROFILED)
        print_overhead(costs)
        print(profile)

    with tempfile.TemporaryDirectory() as work, run_test_server(Path(work)) as database:
        admin = sa.create_engine(database.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE bench")
            version_ = connection.exec_driver_sql("SHOW server_version").scalar()
        admin.dispose()
        print(
            f"PostgreSQL {version_} (throughput: TLS "
            f"{'direct' if database.direct_tls else 'via front'})"
        )
        if args.only is None:
            targets += request_path_targets(request_path(database, args.seconds, args.rounds))
        targets += drivers.section(database, args.seconds, args.rounds)
    print_targets(targets)


def installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # psycopg, an optional extra
        return "not installed"


VERSIONS = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "sqlmodel",
    "dependency-injector",
    "psycopg2-binary",
    "psycopg",
    "asyncpg",
    "uvicorn",
    "anyio",
)


if __name__ == "__main__":
    main()
