"""psycopg2: whatever cursor class a connection is given keeps DATABASE_STATEMENT_TIMEOUT."""

import pytest
from psycopg2.extensions import cursor
from psycopg2.extras import RealDictCursor

from backend.db.engines.statement_deadline import BoundedCursor, bounded_cursor_class


def test_a_cursor_class_set_later_is_bounded_and_keeps_its_own_behaviour() -> None:
    bounded = bounded_cursor_class(RealDictCursor)
    assert issubclass(bounded, BoundedCursor)
    assert issubclass(bounded, RealDictCursor)
    assert bounded.execute is BoundedCursor.execute  # each wait bounded first


def test_the_plain_and_the_bounded_cursor_classes_are_kept_as_they_are() -> None:
    assert bounded_cursor_class(cursor) is BoundedCursor
    assert bounded_cursor_class(None) is BoundedCursor
    assert bounded_cursor_class(BoundedCursor) is BoundedCursor


def test_a_cursor_factory_that_is_no_class_is_refused_in_one_line() -> None:
    def make_cursor(*args: object) -> cursor:
        raise AssertionError("never called")

    with pytest.raises(TypeError) as refused:
        bounded_cursor_class(make_cursor)
    message = str(refused.value)
    assert "\n" not in message
    assert "DATABASE_STATEMENT_TIMEOUT" in message
