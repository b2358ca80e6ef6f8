"""Which statements a read-only engine runs: the client-side guard, statement by statement.

Behind Neon's pooler this check is the only guard, so each row is a statement a read route
could send, as SQLAlchemy or a person would write it.
"""

from typing import Any

import pytest
import sqlalchemy as sa

from backend.db.readsql import not_a_read

note = sa.table("note", sa.column("id"), sa.column("text"))


def compiled(statement: sa.CompoundSelect[Any]) -> str:
    """The SQL the sync engine sends (an engine connects on first use: this one never does)."""
    return str(statement.compile(sa.create_engine("postgresql+psycopg2://")))


READS = {
    "a plain select": "SELECT id FROM note WHERE id = %(id)s",
    "a trailing semicolon": "SELECT 1;",
    "a leading block comment": "/* list the notes */ SELECT id FROM note",
    "a nested block comment": "/* a /* nested */ comment */ SELECT 1",
    "a leading line comment": "-- list the notes\nSELECT id FROM note",
    "SQLAlchemy's union() of limited selects": compiled(
        sa.union(sa.select(note.c.id).limit(1), sa.select(note.c.id).limit(2)).limit(3)
    ),
    "a WITH holding the literal 'update'": (
        "WITH words AS (SELECT 'update' AS word) SELECT word FROM words"
    ),
    "a WITH holding 'delete' in an E-string": (
        "WITH w AS (SELECT E'it''s \\' delete' AS word) SELECT word FROM w"
    ),
    "a dollar-quoted semicolon": "SELECT $tag$; DELETE FROM note$tag$",
    "a semicolon in a string": "SELECT ';' || text FROM note",
    "a semicolon in a comment": "SELECT 1 /* ; DELETE FROM note */",
    "a quoted column named into": 'SELECT "into", "update" FROM note',
    "a quoted identifier with a doubled quote": 'SELECT 1 AS "a "" ; delete"',
    "asyncpg's numbered parameters": "SELECT id FROM note WHERE id = $1",
    "a recursive WITH": (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
        "SELECT i FROM n"
    ),
    "VALUES": "VALUES (1, 'a'), (2, 'b')",
    "TABLE": "TABLE note",
    "SHOW": "SHOW default_transaction_read_only",
    "EXPLAIN of a select": "EXPLAIN SELECT 1",
    "EXPLAIN ANALYZE of a select": "EXPLAIN ANALYZE SELECT id FROM note",
    "EXPLAIN (ANALYZE, BUFFERS) of a WITH": (
        "EXPLAIN (ANALYZE, BUFFERS) WITH x AS (SELECT 1) TABLE x"
    ),
    "currval, which only reads": "SELECT currval('note_id_seq')",
    "an advisory lock": "SELECT pg_advisory_xact_lock(1)",
    "a function whose name starts like a refused one": "SELECT nextval_of_mine(1)",
    "a column named like a refused function": "SELECT nextval FROM note",
}

WRITES = {
    # statement: what the refusal names
    "INSERT INTO note (text) VALUES ('a')": "'INSERT'",
    "  update note SET text = 'b'": "'UPDATE'",
    "DELETE FROM note": "'DELETE'",
    "SET default_transaction_read_only = off": "'SET'",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE": "'SET'",
    "RESET ALL": "'RESET'",
    "BEGIN READ WRITE": "'BEGIN'",
    "/* a read? */ DELETE FROM note": "'DELETE'",
    "-- a read?\nDELETE FROM note": "'DELETE'",
    # Several statements in one string: libpq runs them all.
    "SELECT 1; DELETE FROM note": "more than one statement",
    "SELECT 1;DELETE FROM note;": "more than one statement",
    "SET TRANSACTION READ WRITE; INSERT INTO note (text) VALUES ('a')": "more than one",
    # Built-ins that write, however they are spelt.
    "SELECT nextval('note_id_seq')": "nextval()",
    "SELECT NEXTVAL ('note_id_seq')": "nextval()",
    "SELECT pg_catalog.nextval('note_id_seq')": "nextval()",
    "SELECT \"nextval\"('note_id_seq')": "nextval()",
    "SELECT nextval/* hidden */('note_id_seq')": "nextval()",
    "SELECT * FROM nextval('note_id_seq')": "nextval()",
    "VALUES (setval('note_id_seq', 1))": "setval()",
    "SELECT set_config('default_transaction_read_only', 'off', false)": "set_config()",
    "SELECT pg_notify('channel', 'payload')": "pg_notify()",
    "SELECT pg_terminate_backend(42)": "pg_terminate_backend()",
    "SELECT pg_cancel_backend(42)": "pg_cancel_backend()",
    "SELECT pg_reload_conf()": "pg_reload_conf()",
    "SELECT lo_unlink(42)": "lo_unlink()",
    "SELECT lo_import('/etc/passwd')": "lo_import()",
    "SELECT * FROM dblink('host=x', 'DELETE FROM note') AS t(n text)": "dblink()",
    "SELECT dblink_exec('DELETE FROM note')": "dblink_exec()",
    "SELECT U&\"\\006Eextval\"('note_id_seq')": 'U&"',
    # SELECT … INTO creates a table.
    "SELECT * INTO copy_of_note FROM note": "SELECT … INTO",
    "WITH n AS (SELECT 1) SELECT * INTO copy_of_note FROM n": "SELECT … INTO",
    "SELECT 1into copy_of_note": "SELECT … INTO",
    # EXPLAIN ANALYZE runs what it explains.
    "EXPLAIN ANALYZE INSERT INTO note (text) VALUES ('a')": "EXPLAIN of 'INSERT'",
    "EXPLAIN ANALYZE DELETE FROM note": "EXPLAIN of 'DELETE'",
    "EXPLAIN (ANALYZE true, FORMAT json) UPDATE note SET text = 'b'": "EXPLAIN of 'UPDATE'",
    "EXPLAIN ANALYZE VERBOSE EXECUTE sneaky": "EXPLAIN of 'EXECUTE'",
    "EXPLAIN ANALYZE SELECT nextval('note_id_seq')": "nextval()",
    # Data-modifying WITH, wherever the write sits.
    "WITH gone AS (DELETE FROM note RETURNING id) SELECT id FROM gone": "data-modifying WITH",
    "WITH x AS MATERIALIZED (UPDATE note SET text = 'b' RETURNING id) TABLE x": (
        "data-modifying WITH"
    ),
    "WITH x AS (SELECT 1) DELETE FROM note": "data-modifying WITH",
    "WITH x AS (SELECT 'update') INSERT INTO note (text) SELECT * FROM x": "data-modifying WITH",
    # Row locks write the rows' lock marks (and a replica refuses them).
    "SELECT id FROM note FOR UPDATE": "row lock",
    "SELECT id FROM note FOR NO KEY UPDATE": "row lock",
    "SELECT id FROM note FOR SHARE": "row lock",
    "SELECT id FROM note FOR KEY SHARE": "row lock",
    # What it cannot read, it does not run (the server would refuse it too).
    "SELECT 'unterminated": "cannot read",
    "SELECT 1 /* unterminated": "cannot read",
    "SELECT $x$ unterminated": "cannot read",
}


@pytest.mark.parametrize("statement", READS.values(), ids=READS.keys())
def test_a_read_is_run(statement: str) -> None:
    assert not_a_read(statement) is None


@pytest.mark.parametrize(("statement", "named"), WRITES.items(), ids=WRITES.keys())
def test_a_write_is_refused_and_named(statement: str, named: str) -> None:
    reason = not_a_read(statement)
    assert reason is not None
    assert named in reason
