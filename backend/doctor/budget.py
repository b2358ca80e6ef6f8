"""The connection budget: how many server connections one deployment of the app may open.

Each engine has its own pool, so a worker may open up to pool_size + max_overflow connections
per engine it builds, and each worker process (uvicorn --workers) has its own engines. The
container builds up to four: the write engine and its async twin, and the read engines
(ReadSessionDep, AsyncReadSessionDep). They are built on first use, and a pool opens a
connection only when a request needs one: an app that only takes SessionDep opens one pool.
"""

from dataclasses import dataclass

from backend.db.engines.pool import pool_sizes
from backend.settings import DatabaseSettings

# The container's engines, by provider name, and whether each is a read engine.
ENGINES: dict[str, bool] = {
    "engine": False,
    "async_engine": False,
    "read_engine": True,
    "async_read_engine": True,
}


@dataclass(frozen=True)
class Budget:
    workers: int
    engines: tuple[str, ...]  # provider names, or "engine 1", "engine 2"… when only counted
    per_engine: tuple[int, ...]  # pool_size + max_overflow of each

    @property
    def per_worker(self) -> int:
        return sum(self.per_engine)

    @property
    def total(self) -> int:
        return self.workers * self.per_worker

    def explain(self) -> str:
        """`2 workers x (10 + 10 + 4 + 4) = 56`: how the total is counted."""
        sizes = " + ".join(str(n) for n in self.per_engine) or "0"
        per_worker = f"({sizes})" if len(self.per_engine) > 1 else sizes
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        return f"{workers} x {per_worker} = {self.total}"


def connection_budget(
    settings: DatabaseSettings, workers: int, engines: tuple[str, ...] | int = tuple(ENGINES)
) -> Budget:
    """The most connections `workers` processes may open with `engines` each.

    `engines`: provider names (see ENGINES), or a count, each then counted at the larger of
    the write and read pools (an upper bound when it is not said which).
    """
    if isinstance(engines, int):
        largest = max(sum(pool_sizes(settings, read)) for read in (False, True))
        names = tuple(f"engine {i + 1}" for i in range(engines))
        return Budget(workers, names, (largest,) * engines)
    return Budget(workers, engines, tuple(sum(pool_sizes(settings, ENGINES[e])) for e in engines))
