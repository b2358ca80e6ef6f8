"""Which statements a read-only engine runs: the statement check, statement by statement.

The server refuses a read session's writes (a READ ONLY transaction); this check, PostgreSQL's
own parser on the statement as sent, is the early error for a write and the refusal of what a
read-only transaction does not stop (SET, set_config, …) or would end (a second statement).
Each row is a statement a read route could send, as SQLAlchemy or a person would write it,
with its parameters bound as psycopg2 binds them (asyncpg's stay $n).
"""

from typing import Any

import pytest
import sqlalchemy as sa

from backend.db.engines.readsql import not_a_read, not_a_read_as_sent

note = sa.table("note", sa.column("id"), sa.column("text"))


def compiled(statement: sa.CompoundSelect[Any]) -> str:
    """The SQL the sync engine sends, its values bound (an engine connects on first use: this
    one never does)."""
    engine = sa.create_engine("postgresql+psycopg2://")
    return str(statement.compile(engine, compile_kwargs={"literal_binds": True}))


READS = {
    "a plain select": "SELECT id FROM note WHERE id = 42",
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
    "a value with a quote, as psycopg2 binds it": "SELECT 1 WHERE 'it''s' = 'x; DELETE'",
    "an E-string continued across lines, holding a semicolon": "SELECT E'a'\n'; DELETE'",
    "a recursive WITH with SEARCH": (
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) "
        "SEARCH DEPTH FIRST BY n SET ord SELECT n FROM t ORDER BY ord"
    ),
    "an empty query": "-- nothing",
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
    "SELECT U&\"\\006Eextval\"('note_id_seq')": "nextval()",
    # SELECT … INTO creates a table.
    "SELECT * INTO copy_of_note FROM note": "SELECT … INTO",
    "WITH n AS (SELECT 1) SELECT * INTO copy_of_note FROM n": "SELECT … INTO",
    "SELECT 1into copy_of_note": "parser refuses",
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
    # What the parser refuses, it does not run (the server would refuse it too).
    "SELECT 'unterminated": "parser refuses",
    "SELECT 1 /* unterminated": "parser refuses",
    "SELECT $x$ unterminated": "parser refuses",
    # Writes after a recursive WITH's CYCLE or SEARCH clause (its SET is no statement).
    "WITH RECURSIVE t(n) AS (SELECT 1) CYCLE n SET c USING p DELETE FROM note": (
        "data-modifying WITH (DELETE)"
    ),
    "WITH RECURSIVE t(n) AS (SELECT 1) SEARCH DEPTH FIRST BY n SET o UPDATE note SET id = 1": (
        "data-modifying WITH (UPDATE)"
    ),
    "EXPLAIN ANALYZE WITH RECURSIVE t(n) AS (SELECT 1) CYCLE n SET c USING p DELETE FROM note": (
        "EXPLAIN of 'DELETE'"
    ),
    # E'…' continued across '<newline>' stays in escape mode: \' is a quote in the string.
    "SELECT E'a'\n'\\' ' ; DELETE FROM note --'": "more than one statement",
    # A value bound inside a string literal by psycopg2: '%' || ' ; DELETE …' as sent.
    "SELECT 1 WHERE text LIKE '%' ; DELETE FROM note; SELECT '%'": "more than one statement",
    # Session state, which a read-only transaction does not stop and a pooler passes on.
    "SET statement_timeout = 50": "'SET'",
    "DISCARD ALL": "'DISCARD'",
    "LISTEN channel": "'LISTEN'",
    "PREPARE p AS SELECT 1": "'PREPARE'",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1": "'DECLARE'",
    "FETCH 1 FROM c": "'FETCH'",
    "COMMIT": "'COMMIT'",
    "SELECT pg_advisory_lock(1)": "pg_advisory_lock()",
    "SELECT pg_catalog.set_config('statement_timeout', '50', false)": "set_config()",
}


@pytest.mark.parametrize("statement", READS.values(), ids=READS.keys())
def test_a_read_is_run(statement: str) -> None:
    assert not_a_read_as_sent(statement) is None


@pytest.mark.parametrize(("statement", "named"), WRITES.items(), ids=WRITES.keys())
def test_a_write_is_refused_and_named(statement: str, named: str) -> None:
    reason = not_a_read_as_sent(statement)
    assert reason is not None
    assert named in reason


def test_a_template_is_read_with_its_placeholders_as_parameters() -> None:
    """What backend.testing checks: a statement compiled for psycopg2, not yet bound."""
    assert not_a_read("SELECT id FROM note WHERE id = %(id_1)s AND text LIKE '%%a'") is None
    assert not_a_read("SELECT %s; DELETE FROM note") == "more than one statement in one call"
    assert not_a_read_as_sent("SELECT id FROM note WHERE id = %(id_1)s") is not None
