"""The plugin's template built from a project's Alembic revisions (alembic_schema), the same
revisions tests/migrations runs as a deploy step, with an env.py of one line."""

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.plugin.shop import run

pytest_plugins = ["pytester"]

REVISIONS = Path(__file__).resolve().parent.parent / "migrations" / "scripts" / "versions"

ENV = """
from backend.migrations import run_migrations
from heroes_models import metadata

run_migrations(metadata)
"""

MODELS = """
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
Table(
    "migrated_hero",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("secret_name", String(100), index=True),
)
"""

CONFTEST = """
import pytest

from backend.testing.migrations import alembic_schema


@pytest.fixture(scope="session")
def backend_schema():
    return alembic_schema("alembic.ini")
"""

TESTS = """
from sqlalchemy import text


def test_the_template_is_at_the_last_revision(backend_db):
    with backend_db.session() as session:
        version = session.exec(text("SELECT version_num FROM alembic_version")).scalar_one()
        columns = session.exec(text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'migrated_hero' ORDER BY ordinal_position"
        )).scalars().all()
    assert version == "add_secret_name"
    assert columns == ["id", "name", "secret_name"]


def test_each_test_starts_from_the_migrated_schema_alone(backend_db):
    with backend_db.session() as session:
        session.exec(text("INSERT INTO migrated_hero (name) VALUES ('Deadpond')"))
        session.commit()


def test_the_row_above_was_rolled_back(backend_db):
    with backend_db.session() as session:
        count = session.exec(text("SELECT count(*) FROM migrated_hero")).scalar_one()
    assert count == 0
"""


def test_the_template_is_built_by_the_projects_migrations(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    scripts = pytester.path / "migrations"
    shutil.copytree(REVISIONS, scripts / "versions", ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "env.py").write_text(textwrap.dedent(ENV).lstrip())
    (pytester.path / "heroes_models.py").write_text(textwrap.dedent(MODELS).lstrip())
    (pytester.path / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\nprepend_sys_path = .\n"
        "path_separator = os\n"
    )
    pytester.makeconftest(textwrap.dedent(CONFTEST).lstrip())
    pytester.makepyfile(test_heroes=textwrap.dedent(TESTS).lstrip())
    run(pytester).assert_outcomes(passed=3)
