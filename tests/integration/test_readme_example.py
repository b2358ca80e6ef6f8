"""The README's override example, run as it is printed there (test_readme checks it is)."""

import sqlalchemy as sa
from dependency_injector import providers
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend.container import Container
from backend.main import create_app


def test_health_uses_the_test_engine(database_url: URL) -> None:
    test_engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    container = Container()
    container.engine.override(providers.Object(test_engine))

    with TestClient(create_app(container)) as client:
        response = client.get("/health/db")

    assert response.status_code == 200
    assert response.json()["pool"]["size"] is None  # NullPool keeps no figures
