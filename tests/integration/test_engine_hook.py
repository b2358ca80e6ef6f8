"""on_engine: every engine a container builds, given to the app's callback once, with its role."""

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import Container, EngineHookError, create_app, on_engine, use_database


def test_the_hook_is_given_each_engine_once_built_before_or_after_it(
    container: Container, database_url: URL
) -> None:
    given: list[tuple[str, str]] = []

    def record(engine: sa.Engine | AsyncEngine, role: str) -> None:
        given.append((role, type(engine).__name__))

    container.engine()
    on_engine(container, record)  # the write engine, built already
    container.engine()
    container.read_engine()
    container.async_engine()
    container.async_read_engine()
    assert given == [
        ("write", "Engine"),
        ("read", "Engine"),
        ("write", "AsyncEngine"),
        ("read", "AsyncEngine"),
    ]
    # A test's database bound anew (use_database resets the container's singletons): the
    # engines built afterwards are given to the hook too.
    use_database(container, database_url)
    given.clear()
    container.engine()
    assert given == [("write", "Engine")]
    for engine in container.built_engines():
        engine.dispose() if isinstance(engine, sa.Engine) else engine.sync_engine.dispose()


def test_a_failing_hook_stops_the_app_at_startup(container: Container, database_url: URL) -> None:
    def broken(engine: object, role: str) -> None:
        raise ValueError("no exporter configured")

    app = create_app(container, on_engine=broken)
    with pytest.raises(EngineHookError) as failure, TestClient(app):
        pass
    for engine in container.built_engines():
        engine.dispose()
    message = str(failure.value)
    assert "\n" not in message
    assert "on_engine callback" in message
    assert "broken" in message
    assert "write engine" in message
    assert "ValueError: no exporter configured" in message
    assert database_url.password
    assert database_url.password not in message
