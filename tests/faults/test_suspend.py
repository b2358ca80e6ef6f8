"""Row 1: Neon suspends an idle compute and its connections die; the next burst must not see it.

Neon suspends after 5 idle minutes, and the layer pings connections idle for over 30 s: scaled
down here to 0.5 s of idleness before the ping, and 0.6 s before the suspend.
"""

import time

import pytest
from sqlalchemy.engine import URL

from backend.testing.postgres import TestServer
from tests.faults.service import Load, assert_nothing_lost, running_service


@pytest.mark.parametrize("endpoint", ["direct", "pooler"])
def test_a_burst_after_a_suspend_has_no_failure(
    monkeypatch: pytest.MonkeyPatch,
    postgres: TestServer,
    database_name: str,
    request: pytest.FixtureRequest,
    flavour: str,
    endpoint: str,
) -> None:
    url: URL = request.getfixturevalue("database_url" if endpoint == "direct" else "pooler_url")
    settings = {"pool_size": "10", "max_overflow": "10", "ping_idle_after": "0.5"}
    if endpoint == "pooler":
        settings["pooler"] = "pgbouncer"
    with running_service(monkeypatch, url, **settings) as (client, _):
        load = Load(client, flavour)
        warm = load.concurrent_burst(100)  # the pool fills with live connections
        assert all(outcome.status == 200 for outcome in warm)

        time.sleep(0.6)  # the pool sits idle...
        assert postgres.suspend(database_name) > 0  # ...and every backend dies

        burst = load.concurrent_burst(200)
        assert [outcome.status for outcome in burst].count(200) == 200
    assert_nothing_lost(load, url)


def test_without_pre_ping_a_suspend_fails_requests_with_503(
    monkeypatch: pytest.MonkeyPatch,
    postgres: TestServer,
    database_name: str,
    database_url: URL,
    flavour: str,
) -> None:
    """The control: the suspend above is real, and what it breaks is answered as an outage."""
    settings = {"pool_size": "10", "max_overflow": "10", "pool_pre_ping": "false"}
    with running_service(monkeypatch, database_url, **settings) as (client, _):
        load = Load(client, flavour)
        load.concurrent_burst(100)
        postgres.suspend(database_name)
        statuses = [outcome.status for outcome in load.concurrent_burst(200)]
    assert 503 in statuses
    assert set(statuses) <= {200, 503}
    assert_nothing_lost(load, database_url)
