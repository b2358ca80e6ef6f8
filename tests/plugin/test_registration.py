"""Installed is enabled, and enabled costs nothing until a test asks for a fixture."""

import pytest

from tests.plugin.shop import run, write_shop

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def shop(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    write_shop(pytester)


def test_a_run_without_its_fixtures_starts_and_imports_nothing(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys


        def test_plain(request):
            assert "backend_client" in request.fixturenames or True  # fixtures are known...
            assert "backend.testing.postgres" not in sys.modules  # ...nothing is loaded
            assert "sqlalchemy" not in sys.modules
        """
    )
    result = run(pytester, "--fixtures")
    result.stdout.fnmatch_lines(["*backend_client*", "*backend_neon*"])  # no conftest line
    run(pytester).assert_outcomes(passed=1)


def test_without_trustme_the_run_says_what_to_install(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys

        sys.modules["trustme"] = None  # not installed
        """
    )
    pytester.makepyfile(
        test_items="""
        def test_items(backend_client):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    assert (
        "trustme, which is not installed: pip install 'fastapi-sqlmodel-neon[testing]'"
        in result.stdout.str()
    )
