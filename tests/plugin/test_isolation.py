"""The plugin as a user meets it: their package's tests, run by pytest, in both modes."""

import pytest

from tests.plugin.shop import run, write_shop

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def shop(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)  # the run starts its own server
    write_shop(pytester)


def test_a_users_tests_pass_in_both_modes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_items="""
        from sqlmodel import select

        from shop.models import Item


        def test_transaction_mode(backend_client, backend_db):
            assert backend_client.post("/items", params={"name": "tea"}).status_code == 201
            assert backend_client.get("/items").json() == ["tea"]
            with backend_db.session() as session:  # the test sees what the route wrote
                assert [item.name for item in session.exec(select(Item))] == ["tea"]


        def test_database_mode(backend_client, backend_transactional_db):
            assert backend_client.post("/items", params={"name": "tea"}).status_code == 201
            with backend_transactional_db.session() as session:  # committed for real
                assert [item.name for item in session.exec(select(Item))] == ["tea"]


        def test_the_client_alone_is_transaction_mode(backend_client, backend_database):
            assert backend_database.mode == "transaction"
        """
    )
    run(pytester).assert_outcomes(passed=3)


def test_a_commit_through_a_route_leaves_nothing_for_the_next_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_commits="""
        import pytest


        @pytest.mark.parametrize("route", ["/items", "/async/items", "/plain/items"])
        def test_commit(backend_client, route):
            assert backend_client.post(route, params={"name": "tea"}).status_code == 201
            assert backend_client.get("/items").json() == ["tea"]


        def test_next(backend_client, backend_db):
            assert backend_client.get("/items").json() == []
            assert backend_client.get("/async/items").json() == []
        """
    )
    run(pytester).assert_outcomes(passed=4)


def test_sync_and_async_sessions_share_the_tests_transaction(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_paths="""
        import pytest


        def test_both_paths(backend_client):
            backend_client.post("/items", params={"name": "sync"})
            backend_client.post("/async/items", params={"name": "async"})
            assert backend_client.get("/items").json() == ["async", "sync"]
            assert backend_client.get("/async/items").json() == ["async", "sync"]


        def test_a_read_between_a_write_and_its_commit(backend_client):
            # Production's read session would not see the flushed row; on the test's one
            # connection it would, so the read is refused, pointing to database mode.
            with pytest.raises(RuntimeError, match="database mode"):
                backend_client.post("/checked/items", params={"name": "tea"})
            assert backend_client.get("/items").json() == []


        def test_the_same_in_database_mode(backend_client, backend_transactional_db):
            response = backend_client.post("/checked/items", params={"name": "tea"})
            assert response.json() == []  # as in production: not committed yet
            assert backend_client.get("/items").json() == ["tea"]


        def test_nothing_left(backend_client):
            assert backend_client.get("/async/items").json() == []
        """
    )
    run(pytester).assert_outcomes(passed=4)


def test_server_session_state_does_not_outlive_its_test(pytester: pytest.Pytester) -> None:
    """ROLLBACK does not release a session-level advisory lock; the next test, on the same
    pooled connection, must not inherit it."""
    pytester.makepyfile(
        test_locks="""
        import pytest


        @pytest.mark.parametrize("round", range(2))
        def test_lock(backend_client, round):
            assert backend_client.get("/locks").json() == 0
            backend_client.post("/lock")
            assert backend_client.get("/locks").json() == 1
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_a_read_session_still_refuses_writes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_reads="""
        import pytest

        from backend.db.engines.readonly import ReadOnlyError


        @pytest.mark.parametrize("route", ["/read/items", "/read/sql"])
        def test_write_through_a_read_session(backend_client, route):
            with pytest.raises(ReadOnlyError):
                backend_client.post(route, params={"name": "tea"})
            assert backend_client.get("/items").json() == []
        """
    )
    run(pytester).assert_outcomes(passed=2)


ASYNC_TESTS = """
import pytest
from sqlmodel import select

from shop.models import Item

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="{scope}")
def anyio_backend():
    return "asyncio"


@pytest.mark.parametrize("round", range(3))
async def test_transaction_mode(backend_async_client, backend_db, round):
    async with backend_async_client as client:
        assert (await client.get("/async/items")).json() == []
        assert (await client.post("/async/items", params={{"name": "tea"}})).status_code == 201
        assert (await client.post("/items", params={{"name": "milk"}})).status_code == 201
        assert (await client.get("/async/items")).json() == ["milk", "tea"]
    async with backend_db.async_session() as session:
        assert len((await session.exec(select(Item))).all()) == 2


@pytest.mark.parametrize("round", range(3))
async def test_database_mode(backend_async_client, backend_transactional_db, round):
    async with backend_async_client as client:
        assert (await client.post("/async/items", params={{"name": "tea"}})).status_code == 201
        assert (await client.get("/async/items")).json() == ["tea"]
    async with backend_transactional_db.async_session() as session:
        assert [item.name for item in (await session.exec(select(Item)))] == ["tea"]
"""


@pytest.mark.parametrize("scope", ["function", "session"])
def test_async_tests_run_on_a_loop_per_test_or_per_session(
    pytester: pytest.Pytester, scope: str
) -> None:
    """anyio gives each test its own event loop (scope "function"); a session-scoped
    anyio_backend gives them one. Async routes roll back too, and no pool outlives its loop."""
    pytester.makepyfile(test_async=ASYNC_TESTS.format(scope=scope))
    run(pytester).assert_outcomes(passed=6)


def test_xdist_gives_each_worker_its_own_databases(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_parallel="""
        import os

        import pytest


        @pytest.mark.parametrize("round", range(6))
        def test_database_mode(backend_client, backend_transactional_db, round):
            backend_client.post("/items", params={"name": "tea"})  # unique: collides if shared
            assert backend_client.get("/items").json() == ["tea"]
            worker = os.environ["PYTEST_XDIST_WORKER"]
            assert f"_{worker}_" in backend_transactional_db.name


        @pytest.mark.parametrize("round", range(6))
        def test_transaction_mode(backend_client, round):
            backend_client.post("/items", params={"name": "tea"})
            assert backend_client.get("/items").json() == ["tea"]
        """
    )
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["*2 workers*"])
