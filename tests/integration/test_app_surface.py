"""Your own app on the layer: one container behind every idiom, one override, your routers,
wiring and lifespan, and apps that do not leak into each other."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import pytest
import sqlalchemy as sa
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

import backend.db.session as db
from backend import (
    AsyncReadSessionDep,
    Container,
    ReadSessionDep,
    SessionDep,
    use_database,
)
from backend.db.engines.readonly import ReadOnlyError
from backend.db.session import get_async_session, get_session
from backend.main import create_app
from backend.wiring import WiringError

router = APIRouter()


@router.get("/idioms")
@inject
async def idioms(
    session: SessionDep,
    plain: Annotated[Session, Depends(get_session)],
    plain_async: Annotated[AsyncSession, Depends(get_async_session)],
) -> dict[str, bool]:
    return {
        "one_session": session is plain,
        "module_engine": session.get_bind() is db.engine,
        "module_async_engine": plain_async.bind is db.async_engine,
        "module_maker": db.session_maker is db.session_maker,
    }


@router.post("/read/write")
@inject
def write_through_read_session(session: ReadSessionDep) -> None:
    session.execute(sa.text("CREATE TABLE never (id int)"))


@router.get("/read/async")
@inject
async def read_async(session: AsyncReadSessionDep) -> int:
    return int(await session.scalar(sa.text("SELECT 41 + 1")) or 0)


@router.get("/pool")
@inject
def pool_size(engine: Annotated[sa.Engine, Depends(Provide[Container.engine])]) -> int:
    return engine.pool.size()  # type: ignore[attr-defined,no-any-return]


def test_every_idiom_shares_the_overridden_container(database_url: URL) -> None:
    container = Container()  # no DATABASE_URL at all: the one call is all it needs
    use_database(container, database_url)
    with TestClient(create_app(container, routers=[router], wire=[__name__])) as client:
        assert client.get("/idioms").json() == dict.fromkeys(
            ["one_session", "module_engine", "module_async_engine", "module_maker"], True
        )


def test_the_one_call_override_keeps_the_read_engines_read_only(database_url: URL) -> None:
    container = Container()
    use_database(container, database_url)
    app = create_app(container, routers=[router], wire=[__name__])
    with TestClient(app) as client:
        with pytest.raises(ReadOnlyError):
            client.post("/read/write")
        assert client.get("/read/async").json() == 42


def test_your_lifespan_runs_inside_ours(database_url: URL) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with app.state.container.engine().connect() as connection:  # the container is ready
            events.append(f"started on {connection.scalar(sa.text('SELECT current_database()'))}")
        yield
        events.append("stopped")

    container = Container()
    use_database(container, database_url)
    with TestClient(create_app(container, lifespan=lifespan)):
        assert events == [f"started on {database_url.database}"]
    assert events[-1] == "stopped"


unwired = APIRouter()


@unwired.get("/forgot-inject")
def forgot_inject(engine: sa.Engine = Depends(Provide[Container.engine])) -> None:
    """The marker without @inject: FastAPI would hand the marker itself to the route."""


def test_a_marker_without_inject_fails_at_startup(database_url: URL) -> None:
    container = Container()
    use_database(container, database_url)
    app = create_app(container, routers=[unwired])
    with pytest.raises(WiringError, match=r"/forgot-inject: forgot_inject takes engine=.*@inject"):
        TestClient(app).__enter__()


def test_an_unwired_module_fails_at_startup(database_url: URL) -> None:
    container = Container()
    use_database(container, database_url)
    app = create_app(container, routers=[router])  # this module is not in wire=[...]
    with pytest.raises(WiringError, match=r"/pool: pool_size takes engine=.*create_app\(wire="):
        TestClient(app).__enter__()


def test_two_apps_in_one_process_keep_their_own_pools(database_url: URL) -> None:
    first, second = Container(), Container()
    use_database(first, database_url.update_query_dict({"application_name": "first"}))
    first.config.database.pool_size.from_value(2)
    use_database(second, database_url)
    second.config.database.pool_size.from_value(7)
    with (
        TestClient(create_app(first)) as one,
        TestClient(create_app(second)) as two,
    ):
        assert one.get("/health/db").json()["pool"]["size"] == 2
        assert two.get("/health/db").json()["pool"]["size"] == 7
        assert one.get("/health/db").json()["pool"]["size"] == 2


def test_shutdown_builds_no_engine(database_url: URL, caplog: pytest.LogCaptureFixture) -> None:
    container = Container()
    # channel_binding makes building an async engine log a warning: none may appear.
    use_database(container, database_url.update_query_dict({"channel_binding": "prefer"}))
    with caplog.at_level(logging.WARNING), TestClient(create_app(container)) as client:
        assert client.get("/health/db").status_code == 200
    assert [type(engine).__name__ for engine in container.built_engines()] == ["Engine"]
    assert "channel_binding" not in caplog.text


def test_session_module_names_are_typed_and_built_once(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url.render_as_string(hide_password=False))
    assert db.session_maker is db.session_maker
    assert db.engine is db.engine
    with db.engine.connect() as connection:  # typed: mypy strict checks this line
        assert connection.scalar(sa.text("SELECT 1")) == 1
    db.engine.dispose()


def test_session_and_container_import_no_cycle() -> None:
    import backend.db.container

    assert "backend.db.session" not in vars(backend.db.container)
    # Nothing the container module holds comes from backend.db.session (the module itself, or
    # a name defined there): the session module sits above the container, not below it.
    assert not any(
        "backend.db.session" in (getattr(v, "__name__", None), getattr(v, "__module__", None))
        for v in vars(backend.db.container).values()
    )


def test_the_earlier_import_paths_still_work() -> None:
    from backend import Container as public_container
    from backend import SessionDep as public_alias
    from backend import create_app as public_create_app
    from backend import use_database as public_use_database
    from backend.container import Container, SessionDep, use_database
    from backend.main import create_app

    assert (Container, SessionDep) == (public_container, public_alias)
    assert (use_database, create_app) == (public_use_database, public_create_app)
