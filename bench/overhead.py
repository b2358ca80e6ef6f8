"""Per-request cost of the layer, in-process, no network: µs a request for routes that take a
session and run nothing (so no connection is ever checked out), called straight through the
ASGI app on one event loop, one request at a time. `python -m bench.overhead [--profile]`.
"""

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import time
from collections.abc import Iterator
from typing import Any

from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, FastAPI, Request
from sqlmodel import Session

from backend import AsyncSessionDep, Container, SessionDep
from backend.main import create_app

router = APIRouter()


def get_db(request: Request) -> Iterator[Session]:
    with Session(request.app.state.baseline_engine) as session:
        yield session


@router.get("/plain")
def plain() -> int:
    return 1


@router.get("/tutorial")
def tutorial(session: Session = Depends(get_db)) -> int:
    return 1


@router.get("/sync")
@inject
def ours_sync(session: SessionDep) -> int:
    return 1


@router.get("/async-plain")
async def async_plain() -> int:
    return 1


@router.get("/async")
@inject
async def ours_async(session: AsyncSessionDep) -> int:
    return 1


ROUTES = {
    "/plain": "plain sync route, no session",
    "/tutorial": "tutorial Depends(get_db)",
    "/sync": "SessionDep",
    "/async-plain": "plain async route, no session",
    "/async": "AsyncSessionDep",
}
# Nothing connects: a session that runs nothing never checks out a connection.
UNREACHABLE = "postgresql://bench@127.0.0.1:9/bench?sslmode=disable"


def build() -> FastAPI:
    os.environ.setdefault("DATABASE_URL", UNREACHABLE)
    container = Container()
    return create_app(container, routers=[router], wire=[__name__])


async def call(app: Any, path: str) -> None:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
        "server": ("bench", 80), "app": app, "state": {},
    }  # fmt: skip
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    assert status == [200], (path, status)


PROFILED = ("/sync", "/async")


TOP = 12


async def measure(requests: int, profile: tuple[str, ...]) -> tuple[dict[str, float], str]:
    app = build()
    reports = []
    async with app.router.lifespan_context(app):
        app.state.baseline_engine = app.state.container.engine()  # the same engine
        for path in ROUTES:
            for _ in range(200):  # warm: wiring caches, first threadpool workers
                await call(app, path)
        rounds: dict[str, list[float]] = {path: [] for path in ROUTES}
        for _ in range(5):  # interleaved, the median of five
            for path in ROUTES:
                started = time.perf_counter()
                for _ in range(requests // 5):
                    await call(app, path)
                rounds[path].append((time.perf_counter() - started) / (requests // 5) * 1e6)
        results = {path: sorted(r)[2] for path, r in rounds.items()}
        for path in profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(requests // 2):
                await call(app, path)
            profiler.disable()
            reports.append(
                f"\ncProfile, {requests // 2} requests to {path} ({ROUTES[path]}), "
                + report(profiler)
            )
    return results, "\n".join(reports)


def report(profiler: cProfile.Profile) -> str:
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime")
    stats.print_stats(TOP)
    own = text.getvalue()
    text.seek(0)
    text.truncate(0)
    stats.sort_stats("cumtime").print_stats(r"scope\.py|container\.py|wiring\.py", TOP)
    layer = text.getvalue()

    def rows(output: str) -> str:
        return output[output.index("   ncalls") :].rstrip()

    return (
        f"top {TOP} by own time:\n{rows(own)}\n"
        f"  the layer's own functions, by cumulative time:\n{rows(layer)}"
    )


def measure_overhead(requests: int, profile: tuple[str, ...] = ()) -> tuple[dict[str, float], str]:
    return asyncio.run(measure(requests, profile))


def print_overhead(results: dict[str, float]) -> None:
    print("\nper-request cost in-process (no network, session taken, nothing run), µs")
    for path, micros in results.items():
        print(f"  {ROUTES[path]:32} {micros:7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--profile", action="append", default=[], help="a route to cProfile")
    args = parser.parse_args()
    results, profile = measure_overhead(args.requests, tuple(args.profile))
    print_overhead(results)
    print(profile)


if __name__ == "__main__":
    main()
