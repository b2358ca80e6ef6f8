"""`python -m bench`: measure the layer against the tutorial baseline, in one run, as ratios.

It starts the Neon stand-in of backend.testing (a TLS-only PostgreSQL and the TLS front), serves
bench/app.py with uvicorn (one worker), and drives it with wrk. Runs are interleaved (A B A B…)
so that drift on a noisy machine falls on every route alike; each figure is the median of the
rounds. Parts whose tools are missing are skipped, saying so.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend.embedded import free_port
from backend.testing.postgres import SuiteDatabase, session_database

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ["/baseline", "/sync", "/async", "/read", "/async-read", "/bare-async"]


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def parse_wrk(output: str) -> Run:
    def milliseconds(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        assert match, output
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert rate, output
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    timeouts = re.search(r"Socket errors: .*timeout (\d+)", output)
    errors = (int(failed.group(1)) if failed else 0) + (int(timeouts.group(1)) if timeouts else 0)
    if "Latency Distribution" not in output:  # not one request answered
        return Run(float(rate.group(1)), float("nan"), float("nan"), errors)
    return Run(float(rate.group(1)), milliseconds("50"), milliseconds("99"), errors)


def wrk(port: int, route: str, connections: int, seconds: int) -> Run:
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            f"http://127.0.0.1:{port}{route}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(output)


@contextmanager
def served(url: URL, routes: list[str]) -> Iterator[dict[str, int]]:
    """bench/app.py under uvicorn (one worker) on DATABASE_URL=url: one process per route.

    A process each, because a route can wedge its server: the tutorial baseline deadlocks at
    c=64 (its sync dependency needs a threadpool worker to close the session, and every worker
    waits for a connection that such a session holds) and would stall whatever ran next on it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    ports = {route: free_port() for route in routes}
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.app:app", "--port", str(port),
             "--log-level", "critical", "--no-access-log"],
            cwd=ROOT,
            env=env,
        )
        for port in ports.values()
    ]  # fmt: skip
    try:
        for route, port in ports.items():
            deadline = time.monotonic() + 30
            while True:
                try:  # up, and its pool warm
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        yield ports
    finally:
        for server in servers:
            server.send_signal(signal.SIGINT)
        for server in servers:
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()  # a wedged one
                server.wait()


def interleaved(
    ports: dict[str, int], connections: int, seconds: int, rounds: int
) -> dict[str, Run]:
    runs: dict[str, list[Run]] = {route: [] for route in ports}
    for _ in range(rounds):
        for route, port in ports.items():
            runs[route].append(wrk(port, route, connections, seconds))
    return {
        route: Run(
            statistics.median(run.requests_per_second for run in done),
            statistics.median(run.p50_ms for run in done),
            statistics.median(run.p99_ms for run in done),
            sum(run.errors for run in done),
        )
        for route, done in runs.items()
    }


def print_http_table(title: str, results: dict[str, Run], baseline: str = "/baseline") -> None:
    base = results[baseline]

    def ratio(ours: float, theirs: float) -> str:
        return f"{ours / theirs:.2f}" if theirs and theirs == theirs else "inf"

    print(f"\n{title}")
    print(
        f"  {'route':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'req/s x':>8} "
        f"{'p50 x':>7} {'p99 x':>7} {'errors':>6}"
    )
    for route, run in results.items():
        print(
            f"  {route:12} {run.requests_per_second:9.0f} {run.p50_ms:8.2f} {run.p99_ms:8.2f} "
            f"{ratio(run.requests_per_second, base.requests_per_second):>8} "
            f"{ratio(run.p50_ms, base.p50_ms):>7} {ratio(run.p99_ms, base.p99_ms):>7} "
            f"{run.errors:6}"
        )


def round_trips(database: SuiteDatabase, name: str) -> dict[str, float]:
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


def cold_path(url: URL) -> tuple[float, float, float]:
    """Seconds to import backend.main and build the container (no connection can be opened:
    the socket module refuses), and to the first and second request on an idle pool."""
    program = (
        "import socket, time\n"
        "socket.socket.connect = None\n"
        "started = time.perf_counter()\n"
        "import backend.main\n"
        "from backend.container import Container\n"
        "Container().settings()\n"
        "print(time.perf_counter() - started)\n"
    )
    env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
    imports = [
        float(
            subprocess.run(
                [sys.executable, "-c", program],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
        )
        for _ in range(5)
    ]
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
    return statistics.median(imports), first, second


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=3, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per figure")
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    with tempfile.TemporaryDirectory() as work, session_database(Path(work)) as database:
        admin = sa.create_engine(database.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE bench")
            version = connection.exec_driver_sql("SHOW server_version").scalar()
        admin.dispose()
        print(f"PostgreSQL {version} (TLS {'direct' if database.direct_tls else 'via front'})")

        trips = round_trips(database, "bench")
        print("\nround trips per warm request (client-to-server flights at the TLS front)")
        for route, count in trips.items():
            print(f"  {route:12} {count:5.2f}")

        imports, first, second = cold_path(database.url("bench"))
        print(
            f"\ncold path: import backend.main + Container() {imports * 1000:.0f} ms "
            f"(no connection opened); first request on an idle pool {first * 1000:.1f} ms, "
            f"the next {second * 1000:.1f} ms"
        )

        if not shutil.which("wrk"):
            print("\nwrk is not installed (apt-get install wrk): HTTP benchmarks skipped")
            return
        results = {}
        for connections in (16, 64):
            with served(database.url("bench"), ROUTES) as ports:  # fresh, for each load
                results[connections] = interleaved(ports, connections, args.seconds, args.rounds)
                print_http_table(
                    f"loopback, c={connections}, uvicorn 1 worker", results[connections]
                )
        assert database.front is not None
        database.front.latency = 0.001
        wan = {}
        with served(database.url("bench", "front"), ROUTES[:5]) as ports:
            for connections in (1, 4):
                wan[connections] = interleaved(ports, connections, args.seconds, args.rounds)
                print_http_table(
                    f"WAN mode (TLS front, 1 ms each way), c={connections}", wan[connections]
                )
        database.front.latency = 0

        def rps(c: int, route: str) -> float:
            return results[c][route].requests_per_second

        summary = {
            "sync_vs_baseline_rps": {
                c: rps(c, "/sync") / rps(c, "/baseline") if rps(c, "/baseline") else "inf"
                for c in results
            },
            "async_vs_sync_rps_c64": results[64]["/async"].requests_per_second
            / results[64]["/sync"].requests_per_second,
            "async_vs_bare_rps_c64": results[64]["/async"].requests_per_second
            / results[64]["/bare-async"].requests_per_second,
            "wan_sync_p50_vs_baseline": {
                c: wan[c]["/sync"].p50_ms / wan[c]["/baseline"].p50_ms for c in wan
            },
            "wan_read_p50_vs_baseline_c1": wan[1]["/read"].p50_ms / wan[1]["/baseline"].p50_ms,
        }
        print("\nratios against the targets")
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
