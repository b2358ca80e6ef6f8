"""Is a SQL statement a read? The read engines' early, friendly refusal — not their guard.

The guard is the server's: every read runs in a READ ONLY transaction
(backend/db/engines/readonly.py), which refuses writes whatever the SQL says, functions included.
What a read-only transaction does not stop is what outlives it on a pooled server connection,
and what ends it early:

- session-level commands (SET, RESET, DISCARD, LISTEN, PREPARE, DECLARE … WITH HOLD, …):
  behind a transaction-mode pooler they stay on the server connection for the next client;
- transaction control (BEGIN, COMMIT, SET TRANSACTION READ WRITE, …), and a second statement in
  one call: psycopg2 sends `SET TRANSACTION READ ONLY; <statement>` as one simple Query, and
  psycopg 3 BEGIN READ ONLY, <statement>, COMMIT in one pipeline, which hold only while
  <statement> is exactly one statement that does not end the transaction.

So this check runs only what it can show to be one read — SELECT (VALUES and TABLE are
SELECTs), SHOW, or EXPLAIN of a SELECT — read by PostgreSQL's own parser (pglast, on the
statement as the driver sends it: psycopg2's with its parameters bound, psycopg 3's and
asyncpg's with $n placeholders), and also names, before anything is sent,
what the server would refuse anyway: a data-modifying WITH, SELECT … INTO, row locks, and the
built-in functions below, some of which (set_config, session advisory locks, dblink) a
read-only transaction does not stop. What it cannot see is what a user-defined function does.
"""

import functools
import json
import re
from collections.abc import Iterator
from typing import Any

from pglast import parser

# Built-in functions that write, act on the server, or leave state on the session although a
# SELECT calls them. Explicit and modest: the ones a read route could plausibly call by mistake
# or be tricked into calling. set_config and the session-level advisory locks are not refused
# by a read-only transaction, and behind a pooler would outlive the request.
SIDE_EFFECTS = frozenset(
    {
        "nextval",
        "setval",
        "set_config",  # e.g. statement_timeout for whoever gets the server connection next
        "pg_notify",
        "pg_cancel_backend",
        "pg_terminate_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_logical_emit_message",
        "pg_create_physical_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_drop_replication_slot",
        # Session-level advisory locks outlive the transaction (the _xact_ ones do not).
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_advisory_unlock",
        "pg_advisory_unlock_shared",
        "pg_advisory_unlock_all",
        # Large objects: created, written, deleted, or copied to and from the server's disk.
        "lo_creat",
        "lo_create",
        "lo_from_bytea",
        "lo_import",
        "lo_export",
        "lo_open",
        "lo_put",
        "lo_truncate",
        "lo_truncate64",
        "lo_unlink",
        "lowrite",
    }
)
SIDE_EFFECT_PREFIXES = ("dblink", "pg_stat_reset")  # dblink runs any SQL on another server

WRITES = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
}


# psycopg2's placeholders in a statement not yet bound: %(name)s, %s, and %% for a literal %.
_PYFORMAT = re.compile(r"%\((?:[^)]*)\)s|%s|%%")


@functools.lru_cache(maxsize=1024)
def not_a_read_as_sent(sql: str) -> str | None:
    """None for one read; else what makes it something else, worded for an error message.

    `sql` is the statement as the driver sends it: psycopg2's with its parameters bound
    (cursor.mogrify), psycopg 3's (as_psycopg_sends) and asyncpg's with $n placeholders (they
    send the values apart). Cached:
    most statements an application sends repeat, and parsing one costs tens of microseconds.
    """
    try:
        statements = json.loads(parser.parse_sql_json(sql))["stmts"]
    except parser.ParseError as error:
        return f"SQL PostgreSQL's parser refuses ({error})"
    if not statements:
        return None  # nothing to run: an empty query
    if len(statements) > 1:
        return "more than one statement in one call"
    (kind, node), *_ = statements[0]["stmt"].items()
    if reason := _not_a_read_statement(kind, node, sql):
        return reason
    return next(_refused_inside({kind: node}), None)


def not_a_read(sql: str) -> str | None:
    """not_a_read_as_sent, also for a statement compiled for psycopg2 but not bound (%(name)s).

    For where no driver binds it (backend.testing's transaction mode, which refuses writes
    before its SAVEPOINTs): its placeholders are read as parameters. Not for an engine: a
    placeholder inside a string literal is bound by psycopg2 into SQL, which only the
    statement as sent shows.
    """
    reason = not_a_read_as_sent(sql)
    if reason is None or "%" not in sql or not reason.startswith("SQL PostgreSQL's parser"):
        return reason
    count = iter(range(1, sql.count("%") + 1))
    return not_a_read_as_sent(
        _PYFORMAT.sub(lambda m: "%" if m[0] == "%%" else f"${next(count)}", sql)
    )


# psycopg 3's placeholders: `%` then a name in parentheses and one character, or any one
# character but a newline (psycopg/_queries.py, _re_placeholder and _split_query).
_PSYCOPG_PLACEHOLDER = re.compile(r"%(?:\(([^)]+)\).|.)")


def as_psycopg_sends(sql: str) -> str | None:
    """A statement psycopg 3 runs with parameters, as the server gets it: each placeholder a
    `$n` (one per name), `%%` a `%`; the values go apart, so none is in the text to check.

    None where psycopg refuses to send it (a placeholder other than %s, %b and %t, or named
    and positional ones mixed): it raises its own error before anything is sent.
    """
    numbers: dict[str | int, int] = {}
    named = set()

    def placeholder(match: re.Match[str]) -> str:
        text = match[0]
        if text == "%%":
            return "%"
        if text[-1] not in "sbt":
            raise ValueError(text)
        key: str | int = match[1] if match[1] is not None else len(numbers)
        named.add(isinstance(key, str))
        return f"${numbers.setdefault(key, len(numbers) + 1)}"

    try:
        converted = _PSYCOPG_PLACEHOLDER.sub(placeholder, sql)
    except ValueError:
        return None
    return None if len(named) > 1 else converted


def _not_a_read_statement(kind: str, node: dict[str, Any], sql: str) -> str | None:
    if kind in ("SelectStmt", "VariableShowStmt"):
        return None
    if kind == "ExplainStmt":  # with or without ANALYZE: EXPLAIN ANALYZE runs what it explains
        (inner, inner_node), *_ = node["query"].items()
        if inner == "SelectStmt":
            return None
        return f"EXPLAIN of {_named(inner, inner_node)}"
    if kind in WRITES and "withClause" in node:
        return f"a data-modifying WITH ({WRITES[kind]})"
    return _named(kind, node, sql)


def _named(kind: str, node: dict[str, Any], sql: str | None = None) -> str:
    if kind in WRITES:
        return repr(WRITES[kind])
    if sql is not None:  # the statement's own first word: 'SET', 'RESET', 'BEGIN', 'LISTEN', …
        words = [token for token in parser.scan(sql) if not token.name.endswith("_COMMENT")]
        if words:
            return repr(sql[words[0].start : words[0].end + 1].upper())
    return repr(kind.removesuffix("Stmt").upper())


def _refused_inside(node: Any) -> Iterator[str]:
    """What the server would refuse, or a read-only transaction would not, inside a read."""
    for kind, value in _walk(node):
        if kind == "CommonTableExpr":
            (query, _), *_ = value["ctequery"].items()
            if query in WRITES:
                yield f"a data-modifying WITH ({WRITES[query]})"
        elif kind == "SelectStmt" and "intoClause" in value:
            yield "SELECT … INTO, which creates a table"
        elif kind == "LockingClause":
            yield "a row lock (FOR UPDATE/SHARE), which writes to the rows"
        elif kind == "FuncCall":
            name = value["funcname"][-1]["String"]["sval"]
            if name in SIDE_EFFECTS or name.startswith(SIDE_EFFECT_PREFIXES):
                yield f"{name}(), which has side effects"


def _walk(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of a parse tree (pglast's JSON: a node is {"TypeName": {fields}})."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key[:1].isupper() and isinstance(value, dict):
                yield key, value
            yield from _walk(value)
