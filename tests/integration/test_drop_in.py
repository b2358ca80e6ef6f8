"""The layer in apps people already have: their own `FastAPI()`, their own lifespan, their own
container wiring, and an engine handed to the container instead of DATABASE_URL.

- A plain `FastAPI()` taking `Depends(get_session)`, with no setup: FastAPI's own yield
  dependency, one session per request, closed (rolled back unless committed) at its end.
- `install(app)` on an existing app, routes in the design card's idiom
  (`Depends(Provide[Container.session])` with @inject, with or without Closing): one session
  per request for every idiom, closed once after the response, admission against the
  threadpool deadlock.
- The same idiom without `install`: one sentence naming the call to add.
- `container.engine.override(...)` with DATABASE_URL unset: the whole database.
"""

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from dependency_injector import providers
from dependency_injector.wiring import Closing, Provide, inject
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.engine import URL
from sqlalchemy.exc import InvalidRequestError
from sqlmodel import Field, Session, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import (
    AsyncReadSessionDep,
    Container,
    OutsideRequestError,
    ReadOnlyError,
    ReadSessionDep,
    get_async_session,
    get_session,
    install,
)
from backend import use_database as point_at
from tests.conftest import use_database

PID = sa.text("SELECT pg_backend_pid()")


class DropInNote(SQLModel, table=True):
    __tablename__ = "drop_in_note"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)


class Seen(BaseModel):
    pid: int
    same_session: bool
    key: str | None = None


kept: list[Session | AsyncSession] = []  # the sessions routes got, to look at after

# --- A plain FastAPI() on Depends(get_session): no install, no middleware, no container.

plain = APIRouter()
SessionOfTheRequest = Annotated[Session, Depends(get_session)]
AsyncSessionOfTheRequest = Annotated[AsyncSession, Depends(get_async_session)]


def current_user(session: SessionOfTheRequest) -> Session:
    return session


async def current_user_async(session: AsyncSessionOfTheRequest) -> AsyncSession:
    return session


@plain.post("/notes/{key}")
def add_note(
    key: str, session: SessionOfTheRequest, user: Annotated[Session, Depends(current_user)]
) -> Seen:
    kept.append(session)
    note = DropInNote(key=key)
    session.add(note)
    session.commit()
    if key.startswith("fail"):
        session.add(DropInNote(key=f"{key}-uncommitted"))
        session.flush()
        raise HTTPException(409, "after a flush, before a commit")
    # expire_on_commit=False: the committed row is read without a round trip.
    return Seen(pid=session.scalar(PID) or 0, same_session=user is session, key=note.key)


@plain.post("/async/notes/{key}")
async def add_note_async(
    key: str,
    session: AsyncSessionOfTheRequest,
    user: Annotated[AsyncSession, Depends(current_user_async)],
) -> Seen:
    kept.append(session)
    note = DropInNote(key=key)
    session.add(note)
    await session.commit()
    if key.startswith("fail"):
        session.add(DropInNote(key=f"{key}-uncommitted"))
        await session.flush()
        raise HTTPException(409, "after a flush, before a commit")
    return Seen(pid=await session.scalar(PID) or 0, same_session=user is session, key=note.key)


def keys(url: URL) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with Session(engine) as session:
        found = set(session.exec(select(DropInNote.key)).all())
    engine.dispose()
    return found


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, database_url: URL) -> URL:
    use_database(monkeypatch, database_url)
    kept.clear()
    return database_url


@pytest.mark.parametrize("path", ["/notes", "/async/notes"], ids=["sync", "async"])
def test_a_plain_app_gets_a_session_per_request_from_get_session(database: URL, path: str) -> None:
    app = FastAPI()
    app.include_router(plain)
    with TestClient(app) as client:
        first = client.post(f"{path}/one")
        second = client.post(f"{path}/two")
        failed = client.post(f"{path}/fail")
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["same_session"]
    assert second.json()["same_session"]
    assert kept[0] is not kept[1]
    assert failed.status_code == 409
    # Committed: durable. Flushed but not committed when the route raised: rolled back.
    assert keys(database) == {"one", "two", "fail"}


def test_a_plain_apps_session_is_closed_and_loud_after_its_request(database: URL) -> None:
    app = FastAPI()
    app.include_router(plain)
    with TestClient(app) as client:
        assert client.post("/notes/closed").status_code == 200
    session = kept[0]
    assert isinstance(session, Session)
    assert not session.in_transaction()
    with pytest.raises(InvalidRequestError, match="permanently closed"):
        session.scalar(PID)


def test_a_plain_app_returns_every_connection(database: URL) -> None:
    from backend.db.deps import default_container

    app = FastAPI()
    app.include_router(plain)
    with TestClient(app) as client:
        for number in range(20):
            assert client.post(f"/notes/n{number}").status_code == 200
            assert client.post(f"/notes/fail{number}").status_code == 409
        assert default_container().engine().pool.checkedout() == 0  # type: ignore[attr-defined]


# --- An existing app with the layer installed, in the design card's idiom.


class AppContainer(Container):
    """The user's own container, as dependency-injector's FastAPI example has one."""

    notes = providers.Factory(lambda session: session, session=Container.session)


installed = APIRouter()


@inject
def current_user_di(session: Session = Depends(Provide[AppContainer.session])) -> Session:
    return session


@installed.post("/di/notes/{key}")
@inject
def add_note_di(
    key: str,
    session: Session = Depends(Provide[AppContainer.session]),
    closing: Session = Depends(Closing[Provide[AppContainer.session]]),
    service: Session = Depends(Provide[AppContainer.notes]),
    user: Session = Depends(current_user_di),
    plain: Session = Depends(get_session),
) -> Seen:
    kept.append(session)
    session.add(DropInNote(key=key))
    session.flush()
    if key.startswith("fail"):
        raise HTTPException(409, "flushed, never committed")
    session.commit()
    same = all(other is session for other in (closing, service, user, plain))
    return Seen(pid=session.scalar(PID) or 0, same_session=same)


@installed.post("/di/async/notes/{key}")
@inject
async def add_note_di_async(
    key: str,
    session: AsyncSession = Depends(Provide[AppContainer.async_session]),
    plain: AsyncSession = Depends(get_async_session),
) -> Seen:
    kept.append(session)
    session.add(DropInNote(key=key))
    await session.flush()
    if key.startswith("fail"):
        raise HTTPException(409, "flushed, never committed")
    await session.commit()
    return Seen(pid=await session.scalar(PID) or 0, same_session=plain is session)


@installed.get("/di/slow")
@inject
def slow(
    session: Session = Depends(Provide[AppContainer.session]),
    user: Session = Depends(current_user_di),
) -> Seen:
    session.scalar(sa.text("SELECT pg_sleep(0.01)"))  # not committed: the close rolls back
    return Seen(pid=session.scalar(PID) or 0, same_session=user is session)


def existing_app(container: AppContainer, events: list[str]) -> FastAPI:
    """An app as its authors wrote it: their FastAPI(), their lifespan, their wiring."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        container.wire(modules=[sys.modules[__name__]])
        events.append("app started")
        yield {"owner": "the app"}
        events.append("app stopped")

    app = FastAPI(lifespan=lifespan)
    app.include_router(installed)
    return app


@pytest.mark.parametrize("path", ["/di/notes", "/di/async/notes"], ids=["sync", "async"])
def test_an_installed_app_gets_one_session_per_request_in_the_design_cards_idiom(
    database: URL, path: str
) -> None:
    container = AppContainer()
    events: list[str] = []
    app = existing_app(container, events)
    assert install(app, container) is container
    with TestClient(app) as client:
        assert events == ["app started"]
        first, second = client.post(f"{path}/one"), client.post(f"{path}/two")
        failed = client.post(f"{path}/fail")
    assert events == ["app started", "app stopped"]
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["same_session"]
    assert second.json()["same_session"]
    assert failed.status_code == 409
    assert kept[0] is not kept[1]
    assert keys(database) == {"one", "two"}
    assert all(not session.in_transaction() for session in kept)  # closed after each request
    assert container.engine().pool.checkedout() == 0  # type: ignore[attr-defined]


def test_an_installed_app_keeps_its_startup_handlers(database: URL) -> None:
    events: list[str] = []
    app = FastAPI()
    # What @app.on_event registers, without its deprecation warning.
    app.router.add_event_handler("startup", lambda: events.append("startup"))
    app.router.add_event_handler("shutdown", lambda: events.append("shutdown"))
    install(app)
    with TestClient(app) as client:
        assert client.get("/health/db").status_code == 200
    assert events == ["startup", "shutdown"]


@pytest.mark.anyio
async def test_256_concurrent_requests_in_the_design_cards_idiom_on_a_pool_of_10(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    use_database(monkeypatch, database_url, pool_size="5", max_overflow="5", pool_timeout="5")
    container = AppContainer()
    app = existing_app(container, [])
    install(app, container)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.gather(*(client.get("/di/slow") for _ in range(256)))
    # A request that waited past pool_timeout would be a 503.
    assert Counter(response.status_code for response in responses) == {200: 256}
    assert container.engine().pool.checkedout() == 0  # type: ignore[attr-defined]


def test_the_idiom_without_install_says_which_call_to_add(database: URL) -> None:
    container = AppContainer()
    app = existing_app(container, [])
    with (
        TestClient(app) as client,
        pytest.raises(OutsideRequestError, match=r"add `backend.install\(app\)`"),
    ):
        client.post("/di/notes/never")
    assert keys(database) == set()


# --- An engine given to the container is the whole database.

overridden = APIRouter()


@overridden.get("/read")
def read(session: ReadSessionDep) -> dict[str, Any]:
    row = session.execute(sa.text("SELECT current_database(), current_setting('port')")).one()
    try:
        session.execute(sa.text("INSERT INTO drop_in_note (key) VALUES ('through a read')"))
    except ReadOnlyError:
        refused = True
    else:
        refused = False
    return {"database": row[0], "refused": refused, "bind": id(session.get_bind())}


@overridden.get("/async/read")
async def read_async(session: AsyncReadSessionDep) -> dict[str, Any]:
    database = await session.scalar(sa.text("SELECT current_database()"))
    read_only = await session.scalar(sa.text("SELECT current_setting('transaction_read_only')"))
    return {"database": database, "read_only": read_only}


@pytest.fixture
def no_database_url(database_url: URL) -> URL:
    # The clean_environment fixture has removed DATABASE_URL; the engines get this instead.
    return database_url


def test_an_overriding_engine_needs_no_database_url(no_database_url: URL) -> None:
    engine = sa.create_engine(no_database_url, pool_size=3)
    container = Container()
    container.engine.override(providers.Object(engine))
    app = FastAPI()
    app.include_router(overridden)
    install(app, container)
    with TestClient(app) as client:
        health = client.get("/health/db")
        read_answer = client.get("/read")
    assert health.status_code == 200, health.text
    assert health.json()["pool"]["size"] == 3
    assert read_answer.status_code == 200, read_answer.text
    assert read_answer.json()["database"] == no_database_url.database
    assert read_answer.json()["refused"] is True
    # Nothing was built from settings: nothing to dispose at shutdown but what was given.
    assert container.built_engines() == []
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()


def test_an_overriding_async_engine_serves_async_reads_read_only(no_database_url: URL) -> None:
    # The app's own async engine (made here by another container, for its TLS arguments).
    own = Container()
    point_at(own, no_database_url)
    engine = own.async_engine()
    container = Container()
    container.async_engine.override(providers.Object(engine))
    app = FastAPI()
    app.include_router(overridden)
    install(app, container, health=False)
    with TestClient(app) as client:
        answer = client.get("/async/read")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"database": no_database_url.database, "read_only": "on"}
    assert container.built_engines() == []


def test_two_apps_in_one_process_keep_their_own_overriding_engines(
    no_database_url: URL,
) -> None:
    engines = [sa.create_engine(no_database_url, pool_size=2) for _ in range(2)]
    apps = []
    for engine in engines:
        container = AppContainer()
        container.engine.override(providers.Object(engine))
        app = FastAPI()
        app.include_router(installed)
        install(app, container, wire=[sys.modules[__name__]])
        apps.append(app)
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        assert first.get("/di/slow").status_code == 200
        # The connection the request used came from the first app's own engine.
        assert [engine.pool.checkedin() for engine in engines] == [1, 0]  # type: ignore[attr-defined]
        assert second.get("/di/slow").status_code == 200
        assert [engine.pool.checkedin() for engine in engines] == [1, 1]  # type: ignore[attr-defined]
    for engine in engines:
        engine.dispose()


def test_check_on_a_container_given_an_engine_checks_that_engine(no_database_url: URL) -> None:
    from backend.doctor import Options, run_checks

    engine = sa.create_engine(no_database_url)
    container = Container()
    container.engine.override(providers.Object(engine))
    report = run_checks(container, Options(pings=2))
    verdicts = {step.name: step.status for step in report.steps}
    assert verdicts == {
        "settings": "skip",
        "dns": "skip",
        "tcp": "skip",
        "tls": "skip",
        "authentication": "pass",
        "server": "pass",
        "round trip": "pass",
    }
    assert report.exit_code == 0
    assert container.built_engines() == []
    engine.dispose()


def test_an_installed_app_tested_without_its_lifespan_still_works(database: URL) -> None:
    """dependency-injector's own FastAPI example tests with `client = TestClient(app)`, which
    runs no lifespan: the layer starts at the first request."""
    container = AppContainer()
    container.wire(modules=[sys.modules[__name__]])
    app = FastAPI()
    app.include_router(installed)
    install(app, container)
    client = TestClient(app)
    answer = client.post("/di/notes/no-lifespan")
    assert answer.status_code == 200, answer.text
    assert answer.json()["same_session"]
    assert keys(database) == {"no-lifespan"}


def test_a_router_another_app_served_first_still_gets_its_sessions(database: URL) -> None:
    """A router shared by several apps, as in a test suite: served first by an app without
    the layer, whose request FastAPI ran its markers as sync dependencies, then by an
    installed app, which turns them into markers resolved on the event loop."""
    router = APIRouter()

    @router.post("/shared/notes/{key}")
    @inject
    def add_note(key: str, session: Session = Depends(Provide[AppContainer.session])) -> bool:
        session.add(DropInNote(key=key))
        session.commit()
        return True

    without_the_layer = FastAPI()
    without_the_layer.include_router(router)
    with TestClient(without_the_layer, raise_server_exceptions=False) as client:
        assert client.post("/shared/notes/before").status_code == 500  # nothing provides it
    installed_app = FastAPI()
    installed_app.include_router(router)
    install(installed_app, AppContainer())
    answer = TestClient(installed_app).post("/shared/notes/after")  # no lifespan
    assert answer.status_code == 200, answer.text
    assert keys(database) == {"after"}
