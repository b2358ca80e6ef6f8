"""One session per request, shared by everything the request runs, closed once after it.

Built the way FastAPI users build apps: a `get_current_user` sub-dependency and a second one
taking the session, a service that a provider builds on `Container.session`, a plain
`Depends(get_session)`, a streaming body, a background task. Sync and async, direct and
through PgBouncer in transaction mode.
"""

import sys
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
from dependency_injector import providers
from dependency_injector.wiring import inject
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlalchemy.exc import InvalidRequestError
from sqlmodel import Field, Session, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import AsyncSessionDep, Container, SessionDep, provide
from backend.db.session import get_async_session, get_session
from backend.db.sessions.scope import OutsideRequestError, RequestScope
from tests.conftest import serving, use_database

PID = sa.text("SELECT pg_backend_pid()")


class ScopeNote(SQLModel, table=True):
    __tablename__ = "scope_note"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)


class NotesService:
    """What users build on the session: it keeps the session it was given."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, key: str) -> None:
        self.session.add(ScopeNote(key=key))
        self.session.flush()


class AsyncNotesService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, key: str) -> None:
        self.session.add(ScopeNote(key=key))
        await self.session.flush()


class AppContainer(Container):
    notes = providers.Factory(NotesService, session=Container.session)
    async_notes = providers.Factory(AsyncNotesService, session=Container.async_session)


NotesDep = Annotated[NotesService, Depends(provide(AppContainer.notes))]
AsyncNotesDep = Annotated[AsyncNotesService, Depends(provide(AppContainer.async_notes))]


@inject
def get_current_user(session: SessionDep) -> dict[str, Any]:
    return {"session": session, "pid": session.scalar(PID)}


@inject
def get_audit_log(session: SessionDep) -> Session:
    return session


@inject
async def get_current_user_async(session: AsyncSessionDep) -> dict[str, Any]:
    return {"session": session, "pid": await session.scalar(PID)}


@inject
async def get_audit_log_async(session: AsyncSessionDep) -> AsyncSession:
    return session


CurrentUser = Annotated[dict[str, Any], Depends(get_current_user)]
CurrentUserAsync = Annotated[dict[str, Any], Depends(get_current_user_async)]
router = APIRouter()
stashed: list[Session] = []
async_stashed: list[AsyncSession] = []


@router.get("/sync/who")
@inject
def who(
    session: SessionDep,
    user: CurrentUser,
    audit: Annotated[Session, Depends(get_audit_log)],
    notes: NotesDep,
    plain: Session = Depends(get_session),
) -> dict[str, Any]:
    sessions = {id(s) for s in (session, user["session"], audit, notes.session, plain)}
    return {"sessions": len(sessions), "pids": len({user["pid"], session.scalar(PID)})}


@router.get("/async/who")
@inject
async def who_async(
    session: AsyncSessionDep,
    user: CurrentUserAsync,
    audit: Annotated[AsyncSession, Depends(get_audit_log_async)],
    notes: AsyncNotesDep,
    plain: AsyncSession = Depends(get_async_session),
) -> dict[str, Any]:
    sessions = {id(s) for s in (session, user["session"], audit, notes.session, plain)}
    return {"sessions": len(sessions), "pids": len({user["pid"], await session.scalar(PID)})}


@router.post("/sync/notes/{key}")
@inject
def add_note(key: str, session: SessionDep, notes: NotesDep, fail: bool = False) -> None:
    notes.add(key)
    if fail:
        raise HTTPException(status_code=409, detail="changed my mind")
    session.commit()


@router.post("/async/notes/{key}")
@inject
async def add_note_async(
    key: str, session: AsyncSessionDep, notes: AsyncNotesDep, fail: bool = False
) -> None:
    await notes.add(key)
    if fail:
        raise HTTPException(status_code=409, detail="changed my mind")
    await session.commit()


@router.get("/sync/stream")
@inject
def stream(session: SessionDep) -> StreamingResponse:
    def rows() -> Iterator[str]:
        for number in range(3):
            yield f"{session.scalar(sa.select(sa.literal(number)))}\n"

    return StreamingResponse(rows())


@router.get("/async/stream")
@inject
async def stream_async(session: AsyncSessionDep) -> StreamingResponse:
    async def rows() -> AsyncIterator[str]:
        for number in range(3):
            yield f"{await session.scalar(sa.select(sa.literal(number)))}\n"

    return StreamingResponse(rows())


@router.post("/sync/later/{key}")
@inject
def add_note_later(key: str, session: SessionDep, tasks: BackgroundTasks) -> None:
    def write() -> None:
        session.add(ScopeNote(key=key))
        session.commit()

    tasks.add_task(write)


@router.post("/async/later/{key}")
@inject
async def add_note_later_async(key: str, session: AsyncSessionDep, tasks: BackgroundTasks) -> None:
    async def write() -> None:
        session.add(ScopeNote(key=key))
        await session.commit()

    tasks.add_task(write)


@router.get("/sync/stash")
@inject
def stash(session: SessionDep) -> None:
    session.scalar(sa.text("SELECT 1"))
    stashed.append(session)


@router.get("/async/stash/{used}")
@inject
async def stash_async(used: bool, session: AsyncSessionDep) -> None:
    if used:
        await session.commit()  # leaves no transaction: closed without a ROLLBACK
    async_stashed.append(session)


@router.get("/async/stashed")
async def use_stashed_async() -> None:
    await async_stashed[-1].scalar(sa.text("SELECT 1"))


@router.get("/sync/stashed")
def use_stashed() -> None:
    stashed[-1].scalar(sa.text("SELECT 1"))


@pytest.fixture(params=["direct", "pooler"])
def endpoint_url(request: pytest.FixtureRequest, database_url: URL) -> URL:
    if request.param == "pooler":
        return request.getfixturevalue("pooler_url")  # type: ignore[no-any-return]
    return database_url


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch, endpoint_url: URL, database_url: URL) -> Container:
    pooler = "pgbouncer" if endpoint_url != database_url else "none"
    use_database(monkeypatch, endpoint_url, pool_size="1", max_overflow="1", pooler=pooler)
    return AppContainer()


@pytest.fixture
def app(container: Container) -> FastAPI:
    return serving(container, sys.modules[__name__])


def checked_out(container: Container, flavour: str) -> int:
    engine = container.engine() if flavour == "sync" else container.async_engine().sync_engine
    return engine.pool.checkedout()  # type: ignore[attr-defined,no-any-return]


def note_keys(url: URL) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with Session(engine) as session:
        keys = sorted(session.exec(select(ScopeNote.key)))
    engine.dispose()
    return keys


def test_route_dependencies_and_services_share_one_session(
    client: TestClient, container: Container, flavour: str
) -> None:
    for _ in range(3):
        response = client.get(f"/{flavour}/who")
        assert response.status_code == 200, response.text
        assert response.json() == {"sessions": 1, "pids": 1}
    assert checked_out(container, flavour) == 0


def test_writes_through_a_service_commit_with_the_route(
    client: TestClient, container: Container, database_url: URL, flavour: str
) -> None:
    keys = [f"{flavour}-{n}" for n in range(12)]
    for key in keys:
        assert client.post(f"/{flavour}/notes/{key}").status_code == 200
    assert client.post(f"/{flavour}/notes/lost", params={"fail": True}).status_code == 409
    assert note_keys(database_url) == sorted(keys)
    assert checked_out(container, flavour) == 0


def test_a_streaming_body_uses_the_request_session(
    client: TestClient, container: Container, flavour: str
) -> None:
    bodies = [client.get(f"/{flavour}/stream").text for _ in range(100)]
    assert bodies == ["0\n1\n2\n"] * 100
    assert checked_out(container, flavour) == 0


def test_a_background_task_uses_the_session_then_it_closes(
    client: TestClient, container: Container, database_url: URL, flavour: str
) -> None:
    # The session closes after the background tasks: they run inside the request.
    keys = [f"later-{flavour}-{n}" for n in range(20)]
    for key in keys:
        assert client.post(f"/{flavour}/later/{key}").status_code == 200
    assert note_keys(database_url) == sorted(keys)
    assert checked_out(container, flavour) == 0


@pytest.mark.parametrize("endpoint_url", ["direct"], indirect=True)
def test_a_session_used_after_its_request_fails_loudly(app: FastAPI, container: Container) -> None:
    with TestClient(app) as client:
        assert client.get("/sync/stash").status_code == 200
        with pytest.raises(InvalidRequestError, match="permanently closed"):
            client.get("/sync/stashed")
    assert container.engine().pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("endpoint_url", ["direct"], indirect=True)
@pytest.mark.parametrize("used", [False, True])
def test_an_async_session_without_a_transaction_is_closed_after_its_request(
    app: FastAPI, container: Container, used: bool
) -> None:
    # Such a session is closed without AsyncSession.close() (no I/O to await): still closed.
    with TestClient(app) as client:
        assert client.get(f"/async/stash/{str(used).lower()}").status_code == 200
        with pytest.raises(InvalidRequestError, match="permanently closed"):
            client.get("/async/stashed")
        assert checked_out(container, "async") == 0


@pytest.mark.parametrize("endpoint_url", ["direct"], indirect=True)
def test_outside_a_request_the_session_is_refused_or_scoped(
    app: FastAPI, container: Container, database_url: URL
) -> None:
    with pytest.raises(OutsideRequestError, match="no request scope is running here"):
        container.session()
    # A script or a worker opens its own scope; the session closes with it.
    with RequestScope():
        session = container.session()
        assert container.session() is session
        session.add(ScopeNote(key="from-a-script"))
        session.commit()
    with pytest.raises(InvalidRequestError, match="permanently closed"):
        session.scalar(sa.text("SELECT 1"))
    assert note_keys(database_url) == ["from-a-script"]
