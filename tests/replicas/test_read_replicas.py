"""DATABASE_READ_URL against real streaming standbys of a TLS-only primary.

Each route answers where its statement ran: `pg_is_in_recovery()` (true only on a standby) and
`inet_server_port()` (which server). Every behaviour runs on a sync and an async route.
"""

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import psycopg2
import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter
from fastapi.testclient import TestClient

from backend import (
    AsyncReadSessionDep,
    AsyncSessionDep,
    Container,
    ReadSessionDep,
    SessionDep,
)
from backend.embedded import PostgresServer
from backend.testing.front import TlsFront
from backend.testing.pgbouncer import PgBouncer, pgbouncer_binary
from tests.conftest import serving, use_database
from tests.replicas.standby import Cluster, replication_cluster

DATABASE = "replicas"
WHERE = sa.text("SELECT pg_is_in_recovery() AS in_recovery, inet_server_port() AS port")
WRITE = sa.text("INSERT INTO replica_note (key) VALUES (:key)")
FIND = sa.text("SELECT count(*) FROM replica_note WHERE key = :key")
router = APIRouter()


def where(row: Any) -> dict[str, Any]:
    return {"in_recovery": row.in_recovery, "port": row.port}


@router.get("/sync/where")
@inject
def read_sync(session: ReadSessionDep) -> dict[str, Any]:
    return where(session.connection().execute(WHERE).one())


@router.get("/async/where")
@inject
async def read_async(session: AsyncReadSessionDep) -> dict[str, Any]:
    return where((await (await session.connection()).execute(WHERE)).one())


@router.post("/sync/notes/{key}")
@inject
def write_sync(key: str, session: SessionDep) -> dict[str, Any]:
    session.connection().execute(WRITE, {"key": key})
    answer = where(session.connection().execute(WHERE).one())
    session.commit()
    return answer


@router.post("/async/notes/{key}")
@inject
async def write_async(key: str, session: AsyncSessionDep) -> dict[str, Any]:
    await (await session.connection()).execute(WRITE, {"key": key})
    answer = where((await (await session.connection()).execute(WHERE)).one())
    await session.commit()
    return answer


@router.get("/sync/notes/{key}")
@inject
def find_sync(key: str, session: ReadSessionDep) -> dict[str, Any]:
    return {
        "found": session.scalar(FIND, {"key": key}) == 1,
        **where(session.connection().execute(WHERE).one()),
    }


@router.get("/async/notes/{key}")
@inject
async def find_async(key: str, session: AsyncReadSessionDep) -> dict[str, Any]:
    found = await session.scalar(FIND, {"key": key}) == 1
    return {"found": found, **where((await (await session.connection()).execute(WHERE)).one())}


# A write the client-side check cannot see: on the driver's own connection, after switching
# the session's own guard (default_transaction_read_only) off. Only the server can refuse it.
LIFT_GUARD = "SET default_transaction_read_only = off"
RAW_WRITE = "INSERT INTO replica_note (key) VALUES ('{}')"


@router.post("/sync/read/write/{key}")
@inject
def write_through_read_sync(key: str, session: ReadSessionDep) -> dict[str, Any]:
    answer = where(session.connection().execute(WHERE).one())
    cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(LIFT_GUARD)
        cursor.execute(RAW_WRITE.format(key))
    except psycopg2.Error as error:
        return {"sqlstate": error.pgcode, "error": str(error).strip(), **answer}
    return {"sqlstate": None, **answer}


@router.post("/async/read/write/{key}")
@inject
async def write_through_read_async(key: str, session: AsyncReadSessionDep) -> dict[str, Any]:
    answer = where((await (await session.connection()).execute(WHERE)).one())
    raw = await (await session.connection()).get_raw_connection()
    try:
        await raw.driver_connection.execute(LIFT_GUARD)  # type: ignore[union-attr]
        await raw.driver_connection.execute(RAW_WRITE.format(key))  # type: ignore[union-attr]
    except Exception as error:  # asyncpg's PostgresError (asyncpg ships no type information)
        return {"sqlstate": getattr(error, "sqlstate", None), "error": str(error), **answer}
    return {"sqlstate": None, **answer}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with replication_cluster(standbys=2) as cluster:
        with cluster.engine(cluster.primary).connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {DATABASE}")
        with cluster.engine(cluster.primary, DATABASE).connect() as connection:
            connection.exec_driver_sql("CREATE TABLE replica_note (key text PRIMARY KEY)")
        for standby in cluster.standbys:
            cluster.wait_until_replayed(standby)
        yield cluster


def app_on(
    monkeypatch: pytest.MonkeyPatch,
    cluster: Cluster,
    replicas: list[PostgresServer],
    **settings: str,
) -> TestClient:
    """The app on the cluster's primary, reading from `replicas` (DATABASE_READ_URL)."""
    urls = [cluster.url(replica, DATABASE) for replica in replicas]
    read_url = "\n".join(url.render_as_string(hide_password=False) for url in urls)
    use_database(monkeypatch, cluster.url(cluster.primary, DATABASE), read_url=read_url, **settings)
    return TestClient(serving(Container(), sys.modules[__name__]), raise_server_exceptions=False)


def on_primary(cluster: Cluster, key: str) -> bool:
    with cluster.engine(cluster.primary, DATABASE).connect() as connection:
        return bool(connection.scalar(FIND, {"key": key}) == 1)


def until(condition: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """Poll `condition` until it returns something true; its last value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s")
        time.sleep(step)
    return value


def test_reads_go_to_the_standby_and_writes_to_the_primary(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    standby = cluster.standbys[0]
    with app_on(monkeypatch, cluster, [standby]) as client:
        written = client.post(f"/{flavour}/notes/{uuid4().hex}")
        read = client.get(f"/{flavour}/where")
    assert written.json() == {"in_recovery": False, "port": cluster.primary.port}
    assert read.json() == {"in_recovery": True, "port": standby.port}


def test_a_row_written_on_the_primary_is_read_from_the_standby_once_replayed(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    key = uuid4().hex
    standby = cluster.standbys[0]
    with app_on(monkeypatch, cluster, [standby]) as client:
        assert client.post(f"/{flavour}/notes/{key}").status_code == 200
        found = until(
            lambda: (r := client.get(f"/{flavour}/notes/{key}").json())["found"] and r, 10
        )
    assert found == {"found": True, "in_recovery": True, "port": standby.port}


def test_a_write_through_the_read_session_is_refused_by_the_standby(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    key = uuid4().hex
    with app_on(monkeypatch, cluster, [cluster.standbys[0]]) as client:
        refused = client.post(f"/{flavour}/read/write/{key}").json()
    assert refused["in_recovery"] is True
    assert refused["sqlstate"] == "25006", refused  # read_only_sql_transaction
    assert "read-only transaction" in refused["error"]
    assert not on_primary(cluster, key)


def test_without_a_replica_that_write_reaches_the_primary(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    """The control for the test above: on the primary's read engine, the session's own guard
    can be lifted from the raw connection, so there the server is not a second defence."""
    key = uuid4().hex
    with app_on(monkeypatch, cluster, []) as client:
        answer = client.post(f"/{flavour}/read/write/{key}").json()
    assert answer == {"sqlstate": None, "in_recovery": False, "port": cluster.primary.port}
    assert on_primary(cluster, key)


def test_a_waking_replica_is_waited_for_not_skipped(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    """A Neon replica asleep, or restarting, is not a replica gone: its first connect gets
    DATABASE_URL's connect timeout and retries. Neon's proxy (the TLS front) refuses for a
    while ("Couldn't connect to compute node"), then holds the connection while it wakes."""
    standby = cluster.standbys[0]
    assert standby.tls is not None
    front = TlsFront(("127.0.0.1", standby.port), *standby.tls, connect_delay=0.5)
    front.start()
    try:
        front.refuse_for(0.5)
        url = cluster.url(standby, DATABASE).set(port=front.port)
        primary = cluster.url(cluster.primary, DATABASE)
        use_database(monkeypatch, primary, read_url=url.render_as_string(hide_password=False))
        app = serving(Container(), sys.modules[__name__])
        with TestClient(app, raise_server_exceptions=False) as client:
            first = client.get(f"/{flavour}/where")
            health = client.get("/health/db").json()["replicas"][0]
    finally:
        front.stop()
    assert first.json() == {"in_recovery": True, "port": standby.port}
    assert health["status"] == "ok"
    assert health["ssl"] is True


@contextmanager
def replay_paused(cluster: Cluster, standby: PostgresServer) -> Iterator[None]:
    engine = cluster.engine(standby)
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT pg_wal_replay_resume()")
        engine.dispose()


def test_a_lagging_standby_shows_in_health_and_past_the_bound_reads_go_to_the_primary(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    standby = cluster.standbys[0]
    settings = {"read_max_lag": "1", "read_lag_check_interval": "0.2"}
    with app_on(monkeypatch, cluster, [standby], **settings) as client:
        assert client.get(f"/{flavour}/where").json()["in_recovery"] is True
        healthy = client.get("/health/db").json()["replicas"]
        with replay_paused(cluster, standby):

            def lag_past_the_bound() -> dict[str, Any] | None:
                client.post(f"/{flavour}/notes/{uuid4().hex}")  # the primary writes on
                replica = client.get("/health/db").json()["replicas"][0]
                return replica if replica["lag_s"] > 1 else None

            lagging = until(lag_past_the_bound, 30, step=0.2)
            during = client.get(f"/{flavour}/where").json()
        # Replay resumed: the standby catches up and takes the reads again.
        back = until(lambda: (r := client.get(f"/{flavour}/where").json())["in_recovery"] and r, 10)
        caught_up = client.get("/health/db").json()["replicas"][0]

    assert healthy[0]["status"] == "ok"
    assert healthy[0]["lag_s"] < 1
    assert healthy[0]["in_recovery"] is True
    assert lagging["status"] == "lagging"
    assert lagging["behind_bytes"] > 0
    assert during == {"in_recovery": False, "port": cluster.primary.port}
    assert back == {"in_recovery": True, "port": standby.port}
    assert caught_up["status"] == "ok"
    assert caught_up["lag_s"] < 1


def test_the_first_read_after_the_standby_stopped_is_answered_by_the_primary(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    """Its pooled connections died with it: seen at checkout (no round trip), so the read is
    routed elsewhere before it runs, instead of failing on a dead connection."""
    standby = cluster.standbys[0]
    with app_on(monkeypatch, cluster, [standby]) as client:
        before = [client.get(f"/{flavour}/where").json() for _ in range(3)]
        standby.stop()
        try:
            after = client.get(f"/{flavour}/where")
        finally:
            standby.start()
    assert before == [{"in_recovery": True, "port": standby.port}] * 3
    assert after.status_code == 200
    assert after.json() == {"in_recovery": False, "port": cluster.primary.port}


class Reader(threading.Thread):
    """Reads without a pause, from a thread, recording each answer: (when, status, body)."""

    def __init__(self, client: TestClient, path: str) -> None:
        super().__init__(daemon=True)
        self.client, self.path = client, path
        self.answers: list[tuple[float, int, dict[str, Any], str | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            response = self.client.get(self.path)
            self.answers.append(
                (time.monotonic(), response.status_code, response.json(),
                 response.headers.get("retry-after"))
            )  # fmt: skip

    def first(self, after: float, test: Callable[[int, dict[str, Any]], bool]) -> float | None:
        return next(
            (t for t, status, body, _ in self.answers if t > after and test(status, body)), None
        )

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def test_a_stopped_standby_sends_reads_to_the_primary_and_they_return_when_it_is_back(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    standby = cluster.standbys[0]
    with app_on(monkeypatch, cluster, [standby]) as client:
        reader = Reader(client, f"/{flavour}/where")
        reader.start()
        try:
            until(lambda: len(reader.answers) >= 20, 10)
            stopped = time.monotonic()
            standby.stop()
            until(lambda: reader.first(stopped, lambda s, b: s == 200 and not b["in_recovery"]), 30)
            down = client.get("/health/db").json()["replicas"][0]
            started = time.monotonic()
            standby.start()
            until(lambda: reader.first(started, lambda s, b: s == 200 and b["in_recovery"]), 60)
        finally:
            reader.stop()
            standby.start() if not standby.is_running() else None

    failed = [(status, body, retry) for _, status, body, retry in reader.answers if status != 200]
    # At most the one read in flight on the standby when it stopped: a 503, as on a primary.
    assert len(failed) <= 1, failed
    assert all(status == 503 and retry == "1" for status, _, retry in failed), failed
    assert down["status"] == "unavailable", down
    # Why, as the replica's state last heard it: whichever path saw the standby go first (a
    # refused connect, a read cut as it stopped, a TLS link closed), in that driver's words.
    assert down["error"], down
    answered_by = {body["port"] for _, status, body, _ in reader.answers if status == 200}
    assert answered_by == {standby.port, cluster.primary.port}


def test_with_fallback_fail_reads_answer_503_while_the_standby_is_down_then_recover(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    standby = cluster.standbys[0]
    with app_on(monkeypatch, cluster, [standby], read_fallback="fail") as client:
        assert client.get(f"/{flavour}/where").json()["in_recovery"] is True
        standby.stop()
        try:
            refused = client.get(f"/{flavour}/where")
            health = client.get("/health/db")
            written = client.post(f"/{flavour}/notes/{uuid4().hex}")  # writes never need it
        finally:
            standby.start()
        back = until(lambda: (r := client.get(f"/{flavour}/where")).status_code == 200 and r, 60)

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["status"] == "unavailable"
    assert "DATABASE_READ_FALLBACK=fail" in refused.json()["error"]
    assert health.status_code == 200  # the primary answers
    assert health.json()["replicas"][0]["status"] == "unavailable"
    assert written.status_code == 200
    assert back.json() == {"in_recovery": True, "port": standby.port}


def test_two_standbys_share_the_reads(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, flavour: str
) -> None:
    with app_on(monkeypatch, cluster, cluster.standbys) as client:
        answers = [client.get(f"/{flavour}/where").json() for _ in range(40)]
        health = client.get("/health/db").json()["replicas"]
    ports = Counter(answer["port"] for answer in answers)
    assert set(ports) == {standby.port for standby in cluster.standbys}
    assert sorted(ports.values()) == [20, 20], ports  # in turn
    assert all(answer["in_recovery"] for answer in answers)
    assert [replica["status"] for replica in health] == ["ok", "ok"]
    assert [replica["name"] for replica in health] == [
        f"replica {n} (127.0.0.1:{standby.port})" for n, standby in enumerate(cluster.standbys, 1)
    ]


def test_urls_reach_each_standby_with_tls(cluster: Cluster) -> None:
    """The stand-in is what it claims: standbys streaming from the primary, over TLS."""
    with cluster.engine(cluster.primary).connect() as connection:
        streams = connection.execute(
            sa.text(
                "SELECT application_name, state, ssl FROM pg_stat_replication"
                " JOIN pg_stat_ssl USING (pid) ORDER BY application_name"
            )
        ).all()
    assert [tuple(stream) for stream in streams] == [
        ("standby1", "streaming", True),
        ("standby2", "streaming", True),
    ]


@pytest.fixture(scope="module")
def standby_pooler(cluster: Cluster) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode in front of the first standby: a -pooler replica."""
    if not pgbouncer_binary():
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    primary = cluster.primary
    assert primary.tls is not None
    pooler = PgBouncer(cluster.standbys[0].port, primary.password, *primary.tls, server_tls=True)
    pooler.start()
    yield pooler
    pooler.stop()


def test_reads_through_a_pooler_in_front_of_the_standby_arrive_there_and_cannot_write(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, standby_pooler: PgBouncer, flavour: str
) -> None:
    """Behind a pooler the read engine has no server-side guard of its own (PgBouncer refuses
    startup options): a hot standby refuses writes all the same."""
    key = uuid4().hex
    url = cluster.url(cluster.standbys[0], DATABASE).set(port=standby_pooler.port)
    monkeypatch.setenv(
        "DATABASE_URL", cluster.url(cluster.primary, DATABASE).render_as_string(hide_password=False)
    )
    monkeypatch.setenv("DATABASE_READ_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("DATABASE_POOLER", "pgbouncer")  # 127.0.0.1 is no ep-…-pooler host
    app = serving(Container(), sys.modules[__name__])
    with TestClient(app, raise_server_exceptions=False) as client:
        reads = [client.get(f"/{flavour}/where").json() for _ in range(5)]
        refused = client.post(f"/{flavour}/read/write/{key}").json()
        health = client.get("/health/db").json()["replicas"][0]
    assert reads == [{"in_recovery": True, "port": cluster.standbys[0].port}] * 5
    assert refused["sqlstate"] == "25006", refused
    assert not on_primary(cluster, key)
    assert health["status"] == "ok"
    assert health["in_recovery"] is True
