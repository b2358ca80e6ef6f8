"""The statement check reads psycopg 3's statements as psycopg sends them: $n placeholders,
the values apart, never in the text."""

from typing import Any

import pytest
import sqlalchemy as sa

from backend.db.engines.readsql import as_psycopg_sends, not_a_read_as_sent

SENT = [
    ("SELECT %(a)s::VARCHAR, %(b)s::INTEGER, %(a)s", {"a": "x", "b": 1}),
    ("SELECT '100%%', %s, %b, %t", (1, 2, 3)),
    ("SELECT 5 %\n 2", ()),  # '%' before a newline is no placeholder for psycopg either
    ("SELECT count(*) FROM note WHERE text LIKE '%%%(q)s%%'", {"q": "; DELETE FROM note"}),
]


@pytest.mark.parametrize(("query", "values"), SENT)
def test_placeholders_become_what_psycopg_sends(query: str, values: Any) -> None:
    # psycopg's own conversion (a private class, the only one that shows it without a server)
    # is the reference: what the server gets is its query text.
    from psycopg._queries import PostgresQuery
    from psycopg.adapt import Transformer

    reference = PostgresQuery(Transformer())
    reference.convert(query, values)
    assert as_psycopg_sends(query) == reference.query.decode()


def test_a_value_in_a_string_literal_stays_a_literal() -> None:
    """psycopg2 would bind it into the SQL; psycopg 3 sends '%$1%' and the value apart."""
    sent = as_psycopg_sends("SELECT count(*) FROM note WHERE text LIKE '%%%(q)s%%'")
    assert sent == "SELECT count(*) FROM note WHERE text LIKE '%$1%'"
    assert not_a_read_as_sent(sent) is None


@pytest.mark.parametrize("query", ["SELECT %d", "SELECT %(a)s, %s", "SELECT 1 % 2"])
def test_what_psycopg_refuses_to_send_is_not_checked(query: str) -> None:
    assert as_psycopg_sends(query) is None
    import psycopg
    from psycopg._queries import PostgresQuery
    from psycopg.adapt import Transformer

    with pytest.raises(psycopg.ProgrammingError):
        PostgresQuery(Transformer()).convert(query, {"a": 1})


def test_sqlalchemys_bind_casts_read_as_one_read() -> None:
    note = sa.table("note", sa.column("id", sa.Integer), sa.column("text", sa.String))
    engine = sa.create_engine("postgresql+psycopg://")  # never connects
    statement = sa.select(note.c.id).where(note.c.text == "tea").limit(1)
    sql = str(statement.compile(engine))
    assert "::VARCHAR" in sql
    sent = as_psycopg_sends(sql)
    assert sent is not None
    assert "$1::VARCHAR" in sent
    assert not_a_read_as_sent(sent) is None
