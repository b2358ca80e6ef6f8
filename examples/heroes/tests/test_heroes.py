"""The example's own tests: the app as it is, pointed at a test database in one call."""

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from heroes.main import app

from backend.container import use_database
from backend.db.session import default_container


@pytest.fixture
def client() -> Iterator[TestClient]:
    use_database(default_container(), os.environ["TEST_DATABASE_URL"])
    with TestClient(app) as client:
        yield client


def test_a_hero_goes_through_every_session_alias(client: TestClient) -> None:
    created = client.post("/heroes", json={"name": "Deadpond", "secret_name": "Dive Wilson"})
    assert created.status_code == 201
    hero_id = created.json()["id"]
    assert [h["name"] for h in client.get("/heroes").json()].count("Deadpond") >= 1
    assert client.get(f"/heroes/{hero_id}").json()["secret_name"] == "Dive Wilson"
    renamed = client.patch(f"/heroes/{hero_id}", json={"name": "Deadpond", "secret_name": "W"})
    assert renamed.json()["secret_name"] == "W"
    assert client.delete(f"/heroes/{hero_id}").status_code == 204
    assert client.get(f"/heroes/{hero_id}").status_code == 404


def test_an_unknown_hero_is_404(client: TestClient) -> None:
    assert client.get("/heroes/999999").status_code == 404
