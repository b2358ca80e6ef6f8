"""Read-only sessions: one round trip for a one-query read, and loud on any write.

A normal session pays BEGIN before its first statement and ROLLBACK when closed; a read that
needs no transaction pays them for nothing (3 round trips for one SELECT). A read engine runs
in autocommit, so each statement is its own transaction, and refuses writes at two levels:

- here, before a statement is sent (backend/db/readsql.py): the only guard behind Neon's
  pooler, and what refuses the statements that would lift the server's guard (SET, BEGIN READ
  WRITE, set_config(), several statements in one call);
- on direct hosts, the server: default_transaction_read_only=on, sent in the startup packet
  (no round trip). It is a session setting that a request could switch off (a user-defined
  function calling set_config(), or SQL sent on the raw driver connection), and it would then
  stay off on the pooled connection for every later request. So it is watched: the server
  reports the setting's every change (a ParameterStatus message, PostgreSQL 14+), which the
  drivers keep, so looking costs no round trip. A connection found with it off is closed.
"""

from collections.abc import Sequence
from typing import Any

import psycopg2.extensions
from sqlalchemy import Engine, event, exc
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlmodel import Session

from backend.db.readsql import not_a_read

READ_ONLY_SETTING = "default_transaction_read_only"
READ_ONLY_OPTIONS = f"-c {READ_ONLY_SETTING}=on"


class ReadOnlyError(RuntimeError):
    """A write through a read-only session or engine."""


class ReadOnlySession(Session):
    """A session that refuses to flush changes: there is no transaction to put them in."""

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        if self.new or self.dirty or self.deleted:
            raise ReadOnlyError(
                "this is a read-only session (ReadSessionDep): write through SessionDep"
            )
        super().flush(objects)


def refuse_writes(engine: Engine) -> None:
    """Refuse, before it is sent, any statement that is not a read."""

    @event.listens_for(engine, "before_cursor_execute")
    def only_reads(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if reason := not_a_read(statement):
            raise ReadOnlyError(
                f"a read-only engine does not run {reason}: write through SessionDep"
            )


def keep_server_guard(engine: Engine) -> None:
    """Close a direct read connection whose default_transaction_read_only was switched off.

    Checked after each statement (so that the request that did it fails at once, and runs
    nothing more on that connection) and at checkout (for SQL sent on the raw driver
    connection, which no statement event sees). A server older than 14 reports nothing: there
    the client check alone guards.
    """

    @event.listens_for(engine, "after_cursor_execute")
    def still_read_only(connection: Connection, *args: Any) -> None:
        if not _read_only(connection.connection.driver_connection):
            switched_off = ReadOnlyError(
                f"a statement switched {READ_ONLY_SETTING} off on a read-only connection; "
                "the connection is closed: write through SessionDep"
            )
            connection.invalidate(switched_off)
            raise switched_off

    @event.listens_for(engine, "checkout")
    def read_only_at_checkout(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        if not _read_only(record.driver_connection):
            # The pool's own answer to a connection it must not hand out: it closes it and
            # connects afresh (SQLAlchemy, "Disconnect Handling - Pessimistic").
            raise exc.DisconnectionError(f"{READ_ONLY_SETTING} was switched off")


def _read_only(driver_connection: Any) -> bool:
    """What the server last reported; True when it reports nothing (PostgreSQL < 14)."""
    if isinstance(driver_connection, psycopg2.extensions.connection):
        value = driver_connection.info.parameter_status(READ_ONLY_SETTING)
    else:  # asyncpg keeps every ParameterStatus in its settings
        value = getattr(driver_connection.get_settings(), READ_ONLY_SETTING, None)
    return value in (None, "on")


def read_only_view(engine: Any) -> Any:
    """A read engine on `engine`'s own pool (an Engine or AsyncEngine the app was given).

    Its connections are not ours to configure, so the server's guard comes from the
    transaction instead of the startup packet: every read runs in a READ ONLY transaction
    (SQLAlchemy's `postgresql_readonly` option, reset when the connection goes back to the
    pool), and writes are refused before they are sent. Listeners on the view are its own:
    the engine it is a view of is left as it was.
    """
    view = engine.execution_options(postgresql_readonly=True)
    refuse_writes(getattr(view, "sync_engine", view))
    return view
