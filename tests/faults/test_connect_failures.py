"""Row 7: connects that fail for good end within the connect budget, alike on both paths."""

import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL, make_url

from backend.testing.postgres import TestServer
from tests.faults.service import running_service

CONNECT_TIMEOUT = 2


@pytest.fixture
def refused_url() -> Iterator[URL]:
    """A loopback port that refuses connections: bound, never listening, held for the test."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield make_url(f"postgresql://app:secret@127.0.0.1:{held.getsockname()[1]}/app")


def test_retries_against_a_refused_port_stop_at_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch, refused_url: URL, flavour: str
) -> None:
    # Eight retries with a doubling pause would wait about 51 s (±50%) in pauses alone.
    settings = {"connect_retries": "8", "connect_timeout": str(CONNECT_TIMEOUT)}
    with running_service(monkeypatch, refused_url, **settings) as (client, _):
        started = time.monotonic()
        response = client.post(f"/{flavour}/pairs/refused")
        waited = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    # The documented bound, with generous slack for a loaded machine; retries used it up.
    assert CONNECT_TIMEOUT - 0.1 <= waited <= CONNECT_TIMEOUT + 8


@pytest.mark.parametrize(
    ("wrong", "words"),
    [("database", 'database "no_such_database" does not exist'), ("password", "password")],
)
def test_a_connect_the_server_refuses_is_a_misconfiguration_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
    postgres: TestServer,
    database_name: str,
    flavour: str,
    wrong: str,
    words: str,
) -> None:
    url = postgres.url(database_name)
    url = url.set(database="no_such_database") if wrong == "database" else url.set(password="x")
    with running_service(monkeypatch, url) as (client, _):
        response = client.post(f"/{flavour}/pairs/refused")
    # 503, but no Retry-After: retrying will not fix a wrong password or database name.
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    assert response.json()["status"] == "misconfigured"
    assert words in response.json()["error"]
    assert "DATABASE_URL" in response.json()["fix"]
