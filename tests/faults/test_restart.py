"""Row 3: the server restarts, or crashes, under load (Neon maintenance).

Requests in flight may fail, with a 503 JSON reason; nothing acknowledged is lost; no pair is
half written; the app serves again by itself and /health/db goes 503, then 200.
"""

import time

import pytest
from sqlalchemy.engine import URL

from backend.testing.postgres import TestServer
from tests.faults.service import Load, assert_nothing_lost, running_service, wait_until


@pytest.mark.parametrize(
    ("endpoint", "mode"),
    [("direct", "fast"), ("direct", "immediate"), ("pooler", "fast")],
)
def test_a_restart_under_load_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
    postgres: TestServer,
    request: pytest.FixtureRequest,
    flavour: str,
    endpoint: str,
    mode: str,
) -> None:
    server = postgres.server
    if server is None:
        pytest.skip("TEST_DATABASE_URL names a server this suite cannot restart")
    url: URL = request.getfixturevalue("database_url" if endpoint == "direct" else "pooler_url")
    settings = {"pool_size": "10", "max_overflow": "10"}
    if endpoint == "pooler":
        settings["pooler"] = "pgbouncer"
    with running_service(monkeypatch, url, **settings) as (client, _):
        with Load(client, flavour, workers=8) as load:
            wait_until(lambda: load.answered_ok() >= 50)
            server.stop(mode)  # type: ignore[arg-type]
            assert client.get("/health/db").status_code == 503
            time.sleep(0.2)
            server.start()
            served = load.answered_ok()
            wait_until(lambda: load.answered_ok() >= served + 100)  # serving again, by itself
        assert client.get("/health/db").status_code == 200
    assert_nothing_lost(load, url)
