"""Row 4: every connection is busy; the next request is told so after pool_timeout, not held."""

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy.engine import URL

from backend import Container
from tests.faults.service import running_service, wait_until


def pool_of(container: Container, flavour: str) -> Any:
    return container.engine().pool if flavour == "sync" else container.async_engine().pool


def test_an_exhausted_pool_answers_503_naming_it(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, flavour: str
) -> None:
    settings = {"pool_size": "2", "max_overflow": "1", "pool_timeout": "1"}
    with running_service(monkeypatch, database_url, **settings) as (client, container):
        with ThreadPoolExecutor(3) as pool:
            long = [pool.submit(client.post, f"/{flavour}/slow/3") for _ in range(3)]
            wait_until(lambda: pool_of(container, flavour).checkedout() == 3)

            started = time.monotonic()
            response = client.post(f"/{flavour}/pairs/waiting")
            waited = time.monotonic() - started

            assert response.status_code == 503
            error = response.json()["error"]
            assert "connection pool exhausted" in error
            assert "limit of size 2 overflow 1 reached" in error
            assert 1 <= waited < 10  # pool_timeout, not a hang
            assert [future.result(timeout=30).status_code for future in long] == [200] * 3
        assert client.post(f"/{flavour}/pairs/after").status_code == 200
        assert pool_of(container, flavour).checkedout() == 0
