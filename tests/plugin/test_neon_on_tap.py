"""Neon's behaviours in a user's tests: the pooler marker, suspend, cold start, latency."""

import pytest

from backend.testing.pgbouncer import pgbouncer_binary
from tests.plugin.shop import run, write_shop

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def shop(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    write_shop(pytester)


@pytest.mark.skipif(not pgbouncer_binary(), reason="pgbouncer is not installed")
def test_the_pooler_marker_goes_through_pgbouncer_in_transaction_mode(
    pytester: pytest.Pytester,
) -> None:
    """A session-level SET made by one request is seen by the next request's connection
    through PgBouncer (it hands the same server connection to another client), and not on
    the direct endpoint."""
    pytester.makepyfile(
        test_tenant="""
        import pytest


        @pytest.mark.backend_pooler
        def test_through_the_pooler(backend_client, backend_database):
            assert backend_database.endpoint == "pooler"
            backend_client.post("/tenant", params={"tenant": "acme"})
            assert backend_client.get("/async/tenant").json() == "acme"  # leaked


        def test_direct(backend_client, backend_transactional_db):
            backend_client.post("/tenant", params={"tenant": "acme"})
            assert backend_client.get("/async/tenant").json() is None
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_without_pgbouncer_pooler_tests_skip_with_the_install_hint(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import backend.testing.postgres

        backend.testing.postgres.pgbouncer_binary = lambda: None  # a machine without it
        """
    )
    pytester.makepyfile(
        test_tenant="""
        import pytest


        @pytest.mark.backend_pooler
        def test_through_the_pooler(backend_client):
            pass
        """
    )
    result = run(pytester, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*apt-get install pgbouncer*"])


def test_a_route_rides_out_a_suspend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_suspend="""
        def test_suspend(backend_client, backend_neon):
            backend_client.post("/items", params={"name": "tea"})
            assert backend_client.get("/items").json() == ["tea"]
            assert backend_client.get("/async/items").json() == ["tea"]
            connections = backend_neon.front.traffic.connections

            assert backend_neon.suspend() > 0  # the app's connections are gone

            assert backend_client.get("/items").json() == ["tea"]
            assert backend_client.get("/async/items").json() == ["tea"]
            assert backend_neon.front.traffic.connections > connections  # new ones


        def test_a_cold_start_and_latency(backend_client, backend_neon):
            backend_neon.cold_start = 0.2
            backend_neon.latency = 0.005
            backend_neon.suspend()
            assert backend_client.post("/async/items", params={"name": "tea"}).status_code == 201
            assert backend_client.get("/items").json() == ["tea"]


        def test_a_suspend_under_a_warm_pool_fails_once_then_recovers(
            backend_client, backend_neon
        ):
            backend_client.get("/items")
            backend_neon.suspend(idle=False)  # as a crash: nothing looks idle
            assert backend_client.get("/items").status_code == 503
            assert backend_client.get("/items").status_code == 200


        def test_the_next_test_has_a_healthy_link(backend_neon):
            assert backend_neon.cold_start == 0 and backend_neon.latency == 0
        """
    )
    run(pytester).assert_outcomes(passed=4)
