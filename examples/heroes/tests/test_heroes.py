"""The example's own tests, on backend's pytest plugin: no conftest.py, no database plumbing."""

import pytest


def test_a_hero_goes_through_every_session_alias(backend_client):
    created = backend_client.post("/heroes", json={"name": "Deadpond", "secret_name": "Dive"})
    assert created.status_code == 201
    hero_id = created.json()["id"]
    assert [hero["name"] for hero in backend_client.get("/heroes").json()] == ["Deadpond"]
    assert backend_client.get(f"/heroes/{hero_id}").json()["secret_name"] == "Dive"
    renamed = backend_client.patch(f"/heroes/{hero_id}", json={"name": "D", "secret_name": "W"})
    assert renamed.json()["secret_name"] == "W"
    assert backend_client.delete(f"/heroes/{hero_id}").status_code == 204
    assert backend_client.get(f"/heroes/{hero_id}").status_code == 404


def test_each_test_starts_from_the_schema_alone(backend_client):
    assert backend_client.get("/heroes").json() == []  # the hero above was rolled back


@pytest.mark.anyio
async def test_on_the_tests_own_event_loop(backend_async_client):
    async with backend_async_client as client:
        created = await client.post("/heroes", json={"name": "Rusty", "secret_name": "Tommy"})
        assert (await client.get(f"/heroes/{created.json()['id']}")).status_code == 200


@pytest.mark.backend_pooler
def test_through_neons_pooler(backend_client):
    created = backend_client.post("/heroes", json={"name": "Spider", "secret_name": "Pedro"})
    assert backend_client.get(f"/heroes/{created.json()['id']}").status_code == 200


def test_a_suspended_compute_goes_unnoticed(backend_client, backend_neon):
    backend_client.post("/heroes", json={"name": "Deadpond", "secret_name": "Dive"})
    backend_neon.cold_start = 0.3  # waking the compute
    backend_neon.suspend()
    assert [hero["name"] for hero in backend_client.get("/heroes").json()] == ["Deadpond"]
