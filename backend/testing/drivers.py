"""Which drivers a test run's engines use: BACKEND_TEST_DRIVER=psycopg runs them on psycopg 3.

Unset (or psycopg2), the test databases are reached as production reaches Neon by default:
psycopg2 for the sync engine, asyncpg for the async one. With `psycopg`, both engines run on
psycopg 3 (`postgresql+psycopg://` and DATABASE_ASYNC_DRIVER=psycopg), so that one suite,
run twice, covers both. Read from the environment, once per use, so that a CI job can set it
for a whole run.
"""

import os

from sqlalchemy.engine import URL

VARIABLE = "BACKEND_TEST_DRIVER"
DRIVERS = ("psycopg2", "psycopg")


def run_driver() -> str:
    """The run's driver family: psycopg2 (with asyncpg), or psycopg (psycopg 3 on both)."""
    driver = os.environ.get(VARIABLE, "") or "psycopg2"
    if driver not in DRIVERS:
        raise ValueError(f"{VARIABLE} must be one of {', '.join(DRIVERS)}, got {driver!r}")
    return driver


def with_run_driver(url: URL) -> URL:
    """`url`, naming the run's sync driver."""
    return url.set(drivername=f"postgresql+{run_driver()}")


def async_driver() -> str:
    """What DATABASE_ASYNC_DRIVER the run's containers get."""
    return "psycopg" if run_driver() == "psycopg" else "asyncpg"
