"""Alembic on the direct endpoint: the one call a project's own `env.py` makes.

    # migrations/env.py
    from backend.migrations import run_migrations
    from heroes.models import SQLModel  # your models

    run_migrations(SQLModel.metadata)

Online, the migrations run on the container's `direct_engine` (backend/db/container.py):
DATABASE_DIRECT_URL, DATABASE_URL_UNPOOLED, or the direct host of a Neon -pooler DATABASE_URL,
with DATABASE_URL's TLS rules and the connect timeout, retry and TCP timeouts, and never on
PgBouncer in transaction mode, which would hand each statement of a migration to any server
connection. One run at a time per database: each holds a session-level advisory lock for its
run, so instances deploying at once take turns. A connection handed in through
`config.attributes["connection"]` (Alembic's cookbook, which
backend.testing.migrations.alembic_schema uses) is used as it is. Offline
(`alembic upgrade head --sql`), the SQL is written for the direct URL's dialect, and nothing
connects.

A setting the layer refuses, or a database it cannot reach, ends `alembic` with its one line
(Alembic's CommandError: `FAILED: …`, a non-zero exit), not a traceback. Alembic is the
`alembic` extra, imported here when a migration runs.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, MetaData, text
from sqlalchemy.exc import SQLAlchemyError

from backend.db.container import Container
from backend.db.engines.error_reports import describe
from backend.settings import ConfigurationError

if TYPE_CHECKING:
    from alembic.runtime.environment import EnvironmentContext

__all__ = ["MIGRATION_LOCK", "run_migrations"]

EXTRA = "pip install 'fastapi-sqlmodel-neon[alembic]'"


def run_migrations(
    target_metadata: MetaData | None = None,
    *,
    container: Container | None = None,
    **configure_options: Any,
) -> None:
    """Run the migrations Alembic was asked for, from its env.py: online on the direct
    endpoint, or as SQL in offline mode.

    `container`: the one whose settings name the database (default: a new `Container()`,
    from DATABASE_* and BACKEND_CONFIG, as the app's). `configure_options` go to Alembic's
    `context.configure()` as they are, e.g. `transaction_per_migration=True`; without it the
    run is one transaction, as in the env.py Alembic generates.
    """
    context = _context()
    options = {"target_metadata": target_metadata, **configure_options}
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):  # a caller's own run (a test template): its logging
        _run_on(context, given, options)
        return
    if context.is_offline_mode():
        with _one_line():
            plan = (container or Container()).direct_plan()
        _log_as_the_ini_says(context)
        # The dialect is all offline mode needs of the URL: no password in it.
        url = plan.sync_driver.url.set(password=None)
        context.configure(
            url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **options
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    own = container is None
    container = container or Container()
    with _one_line():
        engine = container.direct_engine()
        try:
            connection = engine.connect()
        except (SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
            where = engine.url.set(query={}).render_as_string(hide_password=True)
            raise ConfigurationError(
                f"the direct endpoint {where} did not connect: {describe(exc)}"
            ) from None
    # After the refusals above, which Alembic's own logging would otherwise say a second time.
    _log_as_the_ini_says(context)
    try:
        with connection, _one_run_at_a_time(connection):
            _run_on(context, connection, options)
    finally:
        if own:
            engine.dispose()


# The advisory lock that lets one deploy step at a time migrate a database: a bigint that
# every release takes the same.
MIGRATION_LOCK = int.from_bytes(b"migrate!", "big")


@contextmanager
def _one_run_at_a_time(connection: Connection) -> Iterator[None]:
    """Hold the database's migration lock for the run: instances deploying at once take turns,
    and the next one finds the revisions the first applied (Alembic reads the database's
    revision when its run starts). A session-level advisory lock, which only a direct
    connection keeps: behind PgBouncer in transaction mode the next statement may run on
    another server connection. Committed at once, so that Alembic begins its own transaction
    (it leaves one already open to its caller)."""
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()
    try:
        yield
    finally:
        if not connection.invalidated:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()


def _run_on(context: "EnvironmentContext", connection: Connection, options: dict[str, Any]) -> None:
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


def _log_as_the_ini_says(context: "EnvironmentContext") -> None:
    """The logging of alembic.ini, as Alembic's generated env.py sets it up (`Running upgrade
    …` lines), keeping the loggers already made: the layer's warnings still show."""
    name = context.config.config_file_name
    if name is not None and context.config.file_config.has_section("formatters"):
        fileConfig(name, disable_existing_loggers=False)


def _context() -> "EnvironmentContext":
    try:
        from alembic import context
    except ImportError:
        raise ConfigurationError(
            f"run_migrations needs Alembic, which is not installed: {EXTRA}"
        ) from None
    return context  # type: ignore[return-value]  # the module proxies its EnvironmentContext


@contextmanager
def _one_line() -> Iterator[None]:
    """A setting refused, or the database out of reach: Alembic's CommandError, which its
    command line says as one line (`FAILED: …`) and exits non-zero with."""
    from alembic.util import CommandError

    try:
        yield
    except ConfigurationError as error:
        raise CommandError(str(error)) from None
