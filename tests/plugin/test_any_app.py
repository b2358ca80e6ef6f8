"""The plugin on the apps users have, not only the ones create_app() made: a plain FastAPI()
on `Depends(get_session)`, an existing app with `install(app)`, create_app()'s app and an app
factory; each through backend_client and backend_async_client, in both isolation modes."""

import textwrap

import pytest

from tests.plugin.shop import run

pytest_plugins = ["pytester"]

APPS = """
from fastapi import Depends, FastAPI
from sqlmodel import Field, Session, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import create_app, get_async_session, get_session, install


class Pet(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)


def add_routes(app: FastAPI) -> FastAPI:
    @app.post("/pets", status_code=201)
    def add(name: str, session: Session = Depends(get_session)) -> Pet:
        pet = Pet(name=name)
        session.add(pet)
        session.commit()
        return pet

    @app.get("/pets")
    async def names(session: AsyncSession = Depends(get_async_session)) -> list[str]:
        return list((await session.exec(select(Pet.name).order_by(Pet.name))).all())

    return app


plain = add_routes(FastAPI())  # no layer installed: get_session is a yield dependency

installed = add_routes(FastAPI())
install(installed)

made = add_routes(create_app())


def factory() -> FastAPI:
    return add_routes(create_app())
"""

TESTS = """
import pytest
from sqlmodel import select

from backend.testing.apps import load_app
from pets.apps import Pet


@pytest.fixture(params=["plain", "installed", "made", "factory"])
def backend_app(request):
    return load_app(f"pets.apps:{request.param}")


def test_transaction_mode(backend_client, backend_db):
    assert backend_client.post("/pets", params={"name": "rex"}).status_code == 201
    assert backend_client.get("/pets").json() == ["rex"]
    with backend_db.session() as session:  # the test sees what the route wrote
        assert session.exec(select(Pet.name)).all() == ["rex"]


def test_the_next_test_starts_empty(backend_client):
    assert backend_client.get("/pets").json() == []


def test_database_mode(backend_client, backend_transactional_db):
    assert backend_client.post("/pets", params={"name": "rex"}).status_code == 201
    with backend_transactional_db.session() as session:  # committed for real
        assert session.exec(select(Pet.name)).all() == ["rex"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_async_client(backend_async_client, backend_database, anyio_backend):
    async with backend_async_client as client:
        assert (await client.post("/pets", params={"name": "tom"})).status_code == 201
        assert (await client.get("/pets")).json() == ["tom"]
    async with backend_database.async_session() as session:
        assert (await session.exec(select(Pet.name))).all() == ["tom"]
"""


def test_every_kind_of_app_runs_on_the_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    package = pytester.mkpydir("pets")
    (package / "apps.py").write_text(textwrap.dedent(APPS).lstrip())
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    pytester.makepyfile(test_pets=textwrap.dedent(TESTS).lstrip())
    run(pytester).assert_outcomes(passed=16)
