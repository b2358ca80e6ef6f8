"""Read-only sessions: one round trip for a one-query read, and loud on any write.

A normal session pays BEGIN before its first statement and ROLLBACK when closed; a read that
needs no transaction pays them for nothing (3 round trips for one SELECT). A read engine runs
in autocommit, so each statement is its own transaction, and refuses writes at two levels:
the server (default_transaction_read_only, sent in the startup packet, where no pooler would
refuse it) and here (so that a write fails loudly through Neon's pooler too).
"""

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import Session

READ_ONLY_OPTIONS = "-c default_transaction_read_only=on"
# Statements that read; a WITH may hide a write (a data-modifying CTE), so it is looked into.
READS = re.compile(r"\s*(SELECT|SHOW|VALUES|TABLE|EXPLAIN|FETCH)\b", re.IGNORECASE)
CTE_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)


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
        if statement.lstrip().upper().startswith("WITH"):
            if not CTE_WRITE.search(statement):
                return
        elif READS.match(statement):
            return
        raise ReadOnlyError(
            f"a read-only engine does not run {statement.split(None, 1)[0]!r}: "
            "write through SessionDep"
        )
