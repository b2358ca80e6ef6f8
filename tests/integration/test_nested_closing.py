"""A route that closes both a service and the session under it, on every Python we support.

dependency-injector shuts the session down twice here (once as the route's own dependency,
once as the service's), and on Python 3.11 its second, already-done shutdown used to break
asyncio.gather ("'NullAwaitable' object is not iterable").
"""

import sys
from typing import Annotated

import pytest
import sqlalchemy as sa
from dependency_injector import providers
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.container import AsyncSessionDep, ClosingOnLoop, Container
from tests.conftest import serving, use_database


class Greeter:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def greet(self) -> str:
        return str(await self.session.scalar(sa.text("SELECT 'hello'")))


class ServiceContainer(Container):
    greeter = providers.Factory(Greeter, session=Container.async_session)


router = APIRouter()


@router.get("/greeting")
@inject
async def greeting(
    session: AsyncSessionDep,
    greeter: Annotated[Greeter, Depends(ClosingOnLoop[Provide[ServiceContainer.greeter]])],
) -> dict[str, object]:
    return {"greeting": await greeter.greet(), "same_session": greeter.session is session}


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, database_url: URL) -> FastAPI:
    use_database(monkeypatch, database_url)
    container = ServiceContainer()
    return serving(container, sys.modules[__name__])


def test_a_service_and_its_session_are_both_closed(client: TestClient, app: FastAPI) -> None:
    for _ in range(3):
        response = client.get("/greeting")
        assert response.status_code == 200, response.text
        assert response.json() == {"greeting": "hello", "same_session": True}
    assert app.state.container.async_engine().pool.checkedout() == 0
