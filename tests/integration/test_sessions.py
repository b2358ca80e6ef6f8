"""The per-request session, used as a service would: a model, routes, the app, requests.

Every behaviour is proven twice, through a sync route (SessionDep, threadpool) and through an
async one (AsyncSessionDep, event loop): both paths must pass the same suite.
"""

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
import sqlalchemy as sa
from dependency_injector import providers
from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, Session, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import AsyncSessionDep, Container, SessionDep
from backend.db.session import get_async_session, get_session
from tests.conftest import serving, use_database


class Note(SQLModel, table=True):
    __tablename__ = "test_note"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    text: str


class NoteIn(SQLModel):
    key: str
    text: str


router = APIRouter()
seen: list[tuple[str, Session | AsyncSession]] = []
seen_lock = threading.Lock()


def record(request_id: str, session: Session | AsyncSession) -> bool:
    """Tag the session with its request; True if another request had tagged it already."""
    shared = "request" in session.info
    session.info["request"] = request_id
    with seen_lock:
        seen.append((request_id, session))
    return shared


@router.post("/sync/notes", response_model=Note)
@inject
def create_note(note: NoteIn, session: SessionDep) -> Note:
    row = Note.model_validate(note)
    session.add(row)
    session.commit()
    return row  # serialised after the session is closed


@router.post("/async/notes", response_model=Note)
@inject
async def create_note_async(note: NoteIn, session: AsyncSessionDep) -> Note:
    row = Note.model_validate(note)
    session.add(row)
    await session.commit()
    return row


@router.post("/sync/notes/fail")
@inject
def create_note_then_fail(note: NoteIn, session: SessionDep) -> None:
    session.add(Note.model_validate(note))
    session.flush()  # the row is in the database's transaction now
    raise HTTPException(status_code=409, detail="changed my mind")


@router.post("/async/notes/fail")
@inject
async def create_note_then_fail_async(note: NoteIn, session: AsyncSessionDep) -> None:
    session.add(Note.model_validate(note))
    await session.flush()
    raise HTTPException(status_code=409, detail="changed my mind")


@router.get("/sync/sessions/{request_id}")
@inject
def hold_session(request_id: str, session: SessionDep) -> dict[str, bool]:
    shared = record(request_id, session)
    session.scalar(sa.text("SELECT pg_sleep(0.02)"))
    return {"shared": shared, "in_transaction": session.in_transaction()}


@router.get("/async/sessions/{request_id}")
@inject
async def hold_session_async(request_id: str, session: AsyncSessionDep) -> dict[str, bool]:
    shared = record(request_id, session)
    await session.scalar(sa.text("SELECT pg_sleep(0.02)"))
    return {"shared": shared, "in_transaction": session.in_transaction()}


@router.get("/sync/bind")
@inject
def bound_engine(session: SessionDep) -> dict[str, int]:
    return {"engine": id(session.get_bind())}


@router.get("/async/bind")
@inject
async def bound_engine_async(session: AsyncSessionDep) -> dict[str, int]:
    return {"engine": id(session.bind)}


@router.get("/sync/plain/notes")
def count_notes_without_container(session: Session = Depends(get_session)) -> int:
    return len(session.exec(select(Note)).all())


@router.get("/async/plain/notes")
async def count_notes_without_container_async(
    session: AsyncSession = Depends(get_async_session),
) -> int:
    return len((await session.exec(select(Note))).all())


@pytest.fixture
def app(container: Container) -> FastAPI:
    return serving(container, sys.modules[__name__])


def pool_of(container: Container, flavour: str) -> Any:
    return container.engine().pool if flavour == "sync" else container.async_engine().pool


def notes_in(url: URL) -> list[str]:
    """What a fresh engine, outside the app, sees in the table."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with Session(engine) as session:
        keys = [note.key for note in session.exec(select(Note))]
    engine.dispose()
    return sorted(keys)


def test_concurrent_requests_never_share_a_session(
    client: TestClient, container: Container, flavour: str
) -> None:
    seen.clear()
    requests = [uuid4().hex for _ in range(256)]
    with ThreadPoolExecutor(max_workers=256) as pool:
        responses = list(pool.map(lambda rid: client.get(f"/{flavour}/sessions/{rid}"), requests))

    assert [response.status_code for response in responses] == [200] * 256
    assert not any(response.json()["shared"] for response in responses)
    assert all(response.json()["in_transaction"] for response in responses)
    assert len({id(session) for _, session in seen}) == 256
    assert sorted(rid for rid, _ in seen) == sorted(requests)
    # Every session was closed: no transaction left open, every connection back in the pool.
    assert not any(session.in_transaction() for _, session in seen)
    assert pool_of(container, flavour).checkedout() == 0


def test_a_committed_row_is_durable(client: TestClient, database_url: URL, flavour: str) -> None:
    response = client.post(f"/{flavour}/notes", json={"key": "kept", "text": "hello"})
    assert response.status_code == 200
    assert response.json() == {"id": 1, "key": "kept", "text": "hello"}
    assert notes_in(database_url) == ["kept"]


def test_a_failed_request_leaves_no_row(
    client: TestClient, container: Container, database_url: URL, flavour: str
) -> None:
    response = client.post(f"/{flavour}/notes/fail", json={"key": "lost", "text": "never"})
    assert response.status_code == 409
    assert notes_in(database_url) == []
    assert pool_of(container, flavour).checkedout() == 0


def test_an_error_in_the_database_rolls_back_and_answers_500(
    client: TestClient, database_url: URL, flavour: str
) -> None:
    assert client.post(f"/{flavour}/notes", json={"key": "once", "text": "a"}).status_code == 200
    assert client.post(f"/{flavour}/notes", json={"key": "once", "text": "b"}).status_code == 500
    assert client.post(f"/{flavour}/notes", json={"key": "twice", "text": "c"}).status_code == 200
    assert notes_in(database_url) == ["once", "twice"]


def test_the_engine_overrides_reach_sessions_and_health(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:secret@unreachable.invalid/db")
    test_engine = sa.create_engine(database_url, pool_size=3)
    async_url = database_url.set(drivername="postgresql+asyncpg").difference_update_query(
        ["sslmode", "sslrootcert"]
    )
    test_async_engine = create_async_engine(async_url, connect_args={"ssl": "prefer"})
    container = Container()
    container.engine.override(providers.Object(test_engine))
    container.async_engine.override(providers.Object(test_async_engine))
    app = serving(container, sys.modules[__name__])
    with TestClient(app) as client:
        assert client.get("/sync/bind").json() == {"engine": id(test_engine)}
        assert client.get("/async/bind").json() == {"engine": id(test_async_engine)}
        health = client.get("/health/db").json()
        assert health["status"] == "ok"
        assert health["pool"]["size"] == 3
    assert test_async_engine.pool.checkedin() == 0  # type: ignore[attr-defined]


@pytest.fixture
def backends(admin_engine: sa.Engine) -> Callable[[str], int]:
    def count(application_name: str) -> int:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
        with admin_engine.connect() as connection:
            return int(connection.scalar(sa.text(query), {"name": application_name}) or 0)

    return count


def test_shutdown_disposes_the_engines(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, backends: Callable[[str], int], flavour: str
) -> None:
    application_name = f"shutdown-{uuid4().hex[:8]}"
    use_database(monkeypatch, database_url, application_name=application_name)
    container = Container()
    app = serving(container, sys.modules[__name__])

    with TestClient(app) as client:
        assert client.get(f"/{flavour}/sessions/{uuid4().hex}").status_code == 200
        pool = pool_of(container, flavour)
        assert pool.checkedin() == 1
        assert backends(application_name) == 1
    assert pool.checkedin() == 0
    deadline = time.monotonic() + 5
    while backends(application_name) and time.monotonic() < deadline:  # the goodbye arrives
        time.sleep(0.02)
    assert backends(application_name) == 0


def test_the_plain_dependencies_give_the_request_session_of_the_app(
    client: TestClient, flavour: str
) -> None:
    assert client.get(f"/{flavour}/plain/notes").json() == 0


def test_an_app_can_start_twice(app: FastAPI) -> None:
    for _ in range(2):
        with TestClient(app) as client:
            assert client.get(f"/sync/sessions/{uuid4().hex}").status_code == 200
            assert client.get(f"/async/sessions/{uuid4().hex}").status_code == 200


def test_an_outage_answers_503_under_the_test_seam_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # The README's seam: no DATABASE_URL, the engine overridden; here with nobody listening.
    monkeypatch.delenv("DATABASE_URL", raising=False)
    container = Container()
    unreachable = "postgresql+psycopg2://app:s3cret-Pw@127.0.0.1:1/db"
    container.engine.override(providers.Object(sa.create_engine(unreachable)))
    app = serving(container, sys.modules[__name__])
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get(f"/sync/sessions/{uuid4().hex}")
    assert response.status_code == 503, response.text
    assert response.json()["status"] == "unavailable"
    assert "s3cret-Pw" not in response.text
