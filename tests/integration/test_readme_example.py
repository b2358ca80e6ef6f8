"""docs/testing.md's override example, run as it is printed there (test_readme checks it is)."""

from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend import Container, use_database
from backend.main import create_app


def test_health_uses_the_test_database(database_url: URL) -> None:
    container = Container()
    use_database(container, database_url)  # every engine, each keeping its role

    with TestClient(create_app(container)) as client:
        response = client.get("/health/db")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
