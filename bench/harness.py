"""The harness `python -m bench` and its sections share: wrk runs, parsed; bench/app.py served
by uvicorn, one process per route, on the driver asked for; runs interleaved, medians."""

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from backend.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    max_ms: float = float("nan")


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
    latency = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", output, re.MULTILINE)
    longest = (
        float(latency.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[latency.group(2)]
        if latency
        else float("nan")
    )
    return Run(float(rate.group(1)), milliseconds("50"), milliseconds("99"), errors, longest)


def wrk(port: int, route: str, connections: int, seconds: int) -> Run:
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            # Past pool_timeout (30 s): a request that waits is measured, not cut off at
            # wrk's default 2 s and counted as an error.
            "--timeout",
            "40s",
            f"http://127.0.0.1:{port}{route}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(output)


@contextmanager
def served(
    url: URL,
    routes: list[str],
    *,
    sync_driver: str | None = None,
    async_driver: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[dict[str, int]]:
    """bench/app.py under uvicorn (one worker) on DATABASE_URL=url: one process per route.

    A process each, because a route can stall its server: the tutorial baseline returns
    `int`, so FastAPI validates that in its threadpool after the route while the request still
    holds its connection; at c >= 40 workers + pool size every worker can be a route waiting
    for a connection, and nothing moves until pool_timeout. It would stall what ran next.

    The servers' drivers are the layer's choice from their environment, as in production:
    `sync_driver` becomes the URL's scheme (`postgresql+psycopg2`, `postgresql+psycopg`) and
    `async_driver` DATABASE_ASYNC_DRIVER (`asyncpg`, `psycopg`); `env` adds other variables
    (DATABASE_POOLER, BENCH_PREPARE_THRESHOLD). No DATABASE_* or BENCH_* variable of this
    process reaches them. A route may carry a query string to tell two servers of the same
    route apart (`/sync?psycopg2`): bench/app.py's routes take no parameters.
    """
    if sync_driver is not None:
        url = url.set(drivername=f"postgresql+{sync_driver}")
    served_env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BENCH_"))}
    served_env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    if async_driver is not None:
        served_env["DATABASE_ASYNC_DRIVER"] = async_driver
    served_env.update(env or {})
    ports = {route: free_port() for route in routes}
    # Each server's log goes to a file, summarised after it stops: a stalled baseline logs a
    # line per failed request, which would bury the tables.
    with ExitStack() as files:
        logs = {route: files.enter_context(tempfile.TemporaryFile("w+")) for route in routes}
        servers = [
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "bench.app:app", "--port", str(port),
                 "--log-level", "critical", "--no-access-log"],
                cwd=ROOT,
                env=served_env,
                stdout=logs[route],
                stderr=subprocess.STDOUT,
            )
            for route, port in ports.items()
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
                            logs[route].seek(0)
                            print(f"{route} did not start; its log:\n{logs[route].read()}")
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
            for route, log in logs.items():
                log.seek(0)
                for line in log_summary(log.read()):
                    print(f"  log of {route}: {line}")


def log_summary(log: str) -> list[str]:
    """A server log's warnings and errors, each kind once with its count (numbers folded)."""
    kinds: Counter[str] = Counter()
    for line in log.splitlines():
        if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback")):
            kinds[re.sub(r"\d+(\.\d+)?", "N", " ".join(line.split()))] += 1
    return [f"{count} x {kind}" for kind, count in kinds.most_common()]


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
            max(run.max_ms for run in done),
        )
        for route, done in runs.items()
    }
