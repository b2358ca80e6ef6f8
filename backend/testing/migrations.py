"""The test template built from your Alembic revisions, as your deploy step builds production's.

    # conftest.py
    import pytest
    from backend.testing.migrations import alembic_schema

    @pytest.fixture(scope="session")
    def backend_schema():
        return alembic_schema("alembic.ini")

Your env.py's `run_migrations()` (backend.migrations) runs them on the connection handed in
through `config.attributes["connection"]`, Alembic's cookbook recipe: on the template, in one
transaction, once per run.
"""

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

EXTRA = "pip install 'fastapi-sqlmodel-neon[alembic]'"


def alembic_schema(
    ini: str | Path = "alembic.ini", revision: str = "head"
) -> Callable[[Engine], None]:
    """A `backend_schema`: `alembic upgrade <revision>` with the config file `ini`, on the
    engine the plugin gives it (the template's)."""
    try:
        from alembic import command
        from alembic.config import Config
    except ImportError:
        raise RuntimeError(
            f"alembic_schema needs Alembic, which is not installed: {EXTRA}"
        ) from None

    def upgrade(engine: Engine) -> None:
        config = Config(str(ini))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    return upgrade
