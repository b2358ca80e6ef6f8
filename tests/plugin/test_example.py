"""examples/heroes, a separate package, runs its tests on the plugin as docs/testing.md shows."""

import shutil

import pytest

from tests.conftest import project_root
from tests.plugin.shop import run

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "parallel"])
def test_the_example_packages_tests_pass(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str]
) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    example = project_root() / "examples" / "heroes"
    shutil.copytree(example, pytester.path, dirs_exist_ok=True)
    run(pytester, *workers).assert_outcomes(passed=5)


def test_the_testing_page_shows_the_examples_tests() -> None:
    page = (project_root() / "docs/testing.md").read_text()
    tests = (project_root() / "examples/heroes/tests/test_heroes.py").read_text()
    assert tests.split('"""', 2)[2].strip() in page
