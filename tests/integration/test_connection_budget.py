"""Why the read engines keep pools of their own, measured: a read on its own pool is one round
trip; on a pool shared with the write engine it is three or four, however it is switched.

The read engines' connections carry `default_transaction_read_only=on` in their startup packet:
the server's guard, at no round trip. A connection of a shared pool is read-write for the write
sessions, so a read session would have to switch it to read-only and back, or wrap each read in
a read-only transaction: round trips on every read. Counted as flights at the TLS front.
"""

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from backend import Container
from backend.testing.drivers import run_driver
from backend.testing.front import TlsFront
from backend.testing.postgres import TestServer
from tests.conftest import use_database

ONE = "SELECT 1"
Read = Callable[[], object]


@pytest.fixture
def through_front(
    monkeypatch: pytest.MonkeyPatch, postgres: TestServer, front_url: URL
) -> Iterator[tuple[Container, TlsFront]]:
    use_database(monkeypatch, front_url)
    container = Container()
    assert postgres.front is not None
    yield container, postgres.front
    for engine in container.built_engines():
        if isinstance(engine, sa.Engine):
            engine.dispose()


def flights_per_read(front: TlsFront, read: Read) -> float:
    for _ in range(6):  # warm: connected, recently used, psycopg 3's statement prepared
        read()
    front.reset_traffic()
    for _ in range(20):
        read()
    return front.traffic.flights_up / 20


def own_pool(container: Container) -> Read:
    """ReadSessionDep's way: the read engine, read-only from its startup packet, autocommit."""

    def read() -> object:
        with container.read_engine().connect() as connection:
            return connection.exec_driver_sql(ONE).scalar()

    return read


def shared_pool_switched(container: Container) -> Read:
    """The write engine's pool, its connection switched to read-only for the read and back."""

    def read() -> object:
        with container.engine().connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("SET default_transaction_read_only = on")
            try:
                return connection.exec_driver_sql(ONE).scalar()
            finally:  # the next write session must find it read-write
                connection.exec_driver_sql("RESET default_transaction_read_only")

    return read


def shared_pool_read_only_transaction(container: Container) -> Read:
    """The write engine's pool, each read in BEGIN READ ONLY … ROLLBACK."""

    def read() -> object:
        with container.engine().connect() as connection:
            connection.execution_options(postgresql_readonly=True)
            return connection.exec_driver_sql(ONE).scalar()

    return read


@pytest.mark.parametrize(
    ("way", "flights"),
    [
        (own_pool, 1),
        # SET, SELECT, RESET, and psycopg2's `SET default_transaction_isolation TO DEFAULT` when
        # SQLAlchemy takes the connection out of autocommit again on its return to the pool
        # (psycopg 3 sends nothing for that: 3).
        (shared_pool_switched, 4),
        # BEGIN READ ONLY, SELECT, ROLLBACK: what SessionDep pays.
        (shared_pool_read_only_transaction, 3),
    ],
)
def test_round_trips_of_a_one_query_read(
    through_front: tuple[Container, TlsFront], way: Callable[[Container], Read], flights: int
) -> None:
    container, front = through_front
    read = way(container)
    assert read() == 1
    if way is shared_pool_switched and run_driver() == "psycopg":
        flights -= 1
    assert flights_per_read(front, read) == flights


def test_the_shared_pools_reads_are_read_only_too(
    through_front: tuple[Container, TlsFront],
) -> None:
    # What the three round trips buy: the same server guard as the read engine's.
    container, _ = through_front
    for way in (shared_pool_switched, shared_pool_read_only_transaction):
        with container.engine().connect() as connection:
            if way is shared_pool_switched:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                connection.exec_driver_sql("SET default_transaction_read_only = on")
                guard = connection.exec_driver_sql("SHOW default_transaction_read_only")
                assert guard.scalar() == "on"
                connection.exec_driver_sql("RESET default_transaction_read_only")
            else:
                connection.execution_options(postgresql_readonly=True)
                read_only = connection.exec_driver_sql("SHOW transaction_read_only").scalar()
                assert read_only == "on"
