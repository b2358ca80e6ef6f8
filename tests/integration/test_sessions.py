"""The per-request session, used as a service would: a model, a router, the app, requests."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import pytest
import sqlalchemy as sa
from dependency_injector import providers
from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlmodel import Field, Session, SQLModel, select

from backend.container import Container, SessionDep
from backend.db.session import get_session
from backend.main import create_app


class Note(SQLModel, table=True):
    __tablename__ = "test_note"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    text: str


class NoteIn(SQLModel):
    key: str
    text: str


router = APIRouter()
seen: list[tuple[str, Session]] = []
seen_lock = threading.Lock()


@router.post("/notes", response_model=Note)
@inject
def create_note(note: NoteIn, session: SessionDep) -> Note:
    row = Note.model_validate(note)
    session.add(row)
    session.commit()
    return row  # serialised after the session is closed


@router.post("/notes/fail")
@inject
def create_note_then_fail(note: NoteIn, session: SessionDep) -> None:
    session.add(Note.model_validate(note))
    session.flush()  # the row is in the database's transaction now
    raise HTTPException(status_code=409, detail="changed my mind")


@router.get("/sessions/{request_id}")
@inject
def hold_session(request_id: str, session: SessionDep) -> dict[str, bool]:
    # A session already tagged by another request would mean two requests share it.
    shared = "request" in session.info
    session.info["request"] = request_id
    with seen_lock:
        seen.append((request_id, session))
    session.execute(sa.text("SELECT pg_sleep(0.02)"))
    return {"shared": shared, "in_transaction": session.in_transaction()}


@router.get("/bind")
@inject
def bound_engine(session: SessionDep) -> dict[str, int]:
    return {"engine": id(session.get_bind())}


@router.get("/plain/notes")
def count_notes_without_container(session: Session = Depends(get_session)) -> int:
    return len(session.exec(select(Note)).all())


@pytest.fixture
def app(container: Container) -> FastAPI:
    app = create_app(container)
    app.include_router(router)
    container.wire(modules=[__name__])
    return app


def notes_in(url: URL) -> list[str]:
    """What a fresh engine, outside the app, sees in the table."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with Session(engine) as session:
        keys = [note.key for note in session.exec(select(Note))]
    engine.dispose()
    return sorted(keys)


def test_concurrent_requests_never_share_a_session(
    client: TestClient, container: Container
) -> None:
    seen.clear()
    requests = [uuid4().hex for _ in range(64)]
    with ThreadPoolExecutor(max_workers=64) as pool:
        responses = list(pool.map(lambda rid: client.get(f"/sessions/{rid}"), requests))

    assert [response.status_code for response in responses] == [200] * 64
    assert not any(response.json()["shared"] for response in responses)
    assert all(response.json()["in_transaction"] for response in responses)
    assert len({id(session) for _, session in seen}) == 64
    assert sorted(rid for rid, _ in seen) == sorted(requests)
    # Every session was closed: no transaction left open, every connection back in the pool.
    assert not any(session.in_transaction() for _, session in seen)
    assert container.engine().pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_committed_row_is_durable(client: TestClient, database_url: URL) -> None:
    response = client.post("/notes", json={"key": "kept", "text": "hello"})
    assert response.status_code == 200
    assert response.json() == {"id": 1, "key": "kept", "text": "hello"}
    assert notes_in(database_url) == ["kept"]


def test_a_failed_request_leaves_no_row(
    client: TestClient, container: Container, database_url: URL
) -> None:
    response = client.post("/notes/fail", json={"key": "lost", "text": "never"})
    assert response.status_code == 409
    assert notes_in(database_url) == []
    assert container.engine().pool.checkedout() == 0  # type: ignore[attr-defined]


def test_an_error_in_the_database_rolls_back_and_answers_500(
    client: TestClient, database_url: URL
) -> None:
    assert client.post("/notes", json={"key": "once", "text": "a"}).status_code == 200
    assert client.post("/notes", json={"key": "once", "text": "b"}).status_code == 500
    assert client.post("/notes", json={"key": "twice", "text": "c"}).status_code == 200
    assert notes_in(database_url) == ["once", "twice"]


def test_the_engine_override_reaches_sessions_and_health(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:secret@unreachable.invalid/db")
    test_engine = sa.create_engine(database_url, pool_size=3)
    container = Container()
    container.engine.override(providers.Object(test_engine))
    app = create_app(container)
    app.include_router(router)
    container.wire(modules=[__name__])
    with TestClient(app) as client:
        assert client.get("/bind").json() == {"engine": id(test_engine)}
        health = client.get("/health/db").json()
        assert health["status"] == "ok"
        assert health["pool"]["size"] == 3


def test_shutdown_disposes_the_engine(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, admin_engine: sa.Engine
) -> None:
    application_name = f"shutdown-{uuid4().hex[:8]}"
    monkeypatch.setenv("DATABASE_URL", database_url.render_as_string(hide_password=False))
    monkeypatch.setenv("DATABASE_APPLICATION_NAME", application_name)
    container = Container()

    def backends() -> int:
        count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
        with admin_engine.connect() as connection:
            return int(connection.scalar(sa.text(count), {"name": application_name}) or 0)

    with TestClient(create_app(container)) as client:
        assert client.get("/health/db").status_code == 200
        pool = container.engine().pool
        assert pool.checkedin() == 1  # type: ignore[attr-defined]
        assert backends() == 1
    assert pool.checkedin() == 0  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while backends() and time.monotonic() < deadline:  # the server notices the goodbye
        time.sleep(0.02)
    assert backends() == 0


def test_get_session_works_without_the_container(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url.render_as_string(hide_password=False))
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        assert client.get("/plain/notes").json() == 0
