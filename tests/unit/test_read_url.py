"""DATABASE_READ_URL: one replica or several, each through DATABASE_URL's rules; and the
routing policy (which replica a read tries, back-off, lag) on its own clock. No connection."""

import logging

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db.reads.replicas import Lag, ReplicaSet
from backend.db.reads.routing import RoutedReadSession
from backend.settings import ConfigurationError
from tests.unit.test_settings import NEON, make_container

PASSWORD = "s3cr,et,pw"  # commas: legal in a URL's password, and libpq's host-list separator
REPLICA = f"postgresql://alex:{PASSWORD}@ep-quiet-lake-654321.us-east-2.aws.neon.tech/neondb"
POOLED = REPLICA.replace("654321.", "654321-pooler.")


def test_unset_reads_go_to_the_primary_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(monkeypatch)
    assert container.settings().replicas == ()
    assert container.replica_engines() == ()
    maker = container.read_session_maker()
    assert maker.kw["bind"] is container.read_engine()
    assert not issubclass(maker.class_, RoutedReadSession)


def test_one_replica_url_takes_the_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(monkeypatch, DATABASE_READ_URL=REPLICA)
    (replica,) = container.settings().replicas
    assert replica.url.password == PASSWORD
    (engine,) = container.replica_engines()
    assert engine.url.host == "ep-quiet-lake-654321.us-east-2.aws.neon.tech"
    assert engine.url.query["sslmode"] == "require"  # remote: TLS, as for DATABASE_URL
    assert "-c default_transaction_read_only=on" in engine.url.query["options"]
    assert issubclass(container.read_session_maker().class_, RoutedReadSession)
    assert container.read_engine().url.host == container.engine().url.host  # the fallback


@pytest.mark.parametrize("separator", [" ", "\n", "\t", "\n  ", "\r\n"])
def test_several_replicas_are_separated_by_whitespace(
    monkeypatch: pytest.MonkeyPatch, separator: str
) -> None:
    read_url = f"\n{REPLICA}{separator}{POOLED}\n"  # a secret file's newlines included
    container = make_container(monkeypatch, DATABASE_READ_URL=read_url)
    replicas = container.settings().replicas
    assert [replica.url.password for replica in replicas] == [PASSWORD, PASSWORD]
    assert [plan.is_pooler for plan in container.replica_plans()] == [False, True]
    hosts = [engine.url.host for engine in container.async_replica_engines()]
    assert hosts == [
        "ep-quiet-lake-654321.us-east-2.aws.neon.tech",
        "ep-quiet-lake-654321-pooler.us-east-2.aws.neon.tech",
    ]


def test_each_replica_gets_the_asyncpg_translation(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{POOLED}?sslmode=require&channel_binding=require"
    container = make_container(monkeypatch, DATABASE_READ_URL=url)
    (plan,) = container.replica_plans()
    assert plan.settings is container.settings().replicas[0]
    target = plan.async_driver
    assert dict(target.url.query) == {}  # no sslmode/channel_binding: asyncpg's TypeError
    assert target.connect_args["ssl"] == "require"
    assert target.connect_args["statement_cache_size"] == 0  # a -pooler replica
    (engine,) = container.async_replica_engines()
    assert isinstance(engine, AsyncEngine)
    assert engine.url.drivername == "postgresql+asyncpg"


def test_a_replica_password_and_secrets_are_never_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{REPLICA}?sslpassword=key-passphrase"
    container = make_container(monkeypatch, DATABASE_READ_URL=url)
    settings = container.settings()
    shown = [repr(settings), str(settings), *(repr(e.url) for e in container.replica_engines())]
    shown += [caplog.text, container.read_replicas().state.states[0].name]
    for text in shown:
        assert PASSWORD not in text
        assert "key-passphrase" not in text
    assert settings.replicas[0].secret("sslpassword") == "key-passphrase"


@pytest.mark.parametrize(
    ("read_url", "message"),
    [
        ("mysql://alex:pw@ep-a.neon.tech/db", "DATABASE_READ_URL must be a PostgreSQL URL"),
        (
            f"{REPLICA} postgresql://alex:pw@ep-b.neon.tech:99999/db",
            "port in DATABASE_READ_URL (URL 2 of 2) must be a port number from 1 to 65535",
        ),
        (f"{REPLICA}?plugin=x", "plugin in DATABASE_READ_URL names a SQLAlchemy plugin"),
        (
            "postgresql://alex:pw@ep-a.neon.tech/db?sslmode=disable",
            "plaintext to ep-a.neon.tech (from host in DATABASE_READ_URL)",
        ),
    ],
)
def test_a_bad_replica_url_is_named(
    monkeypatch: pytest.MonkeyPatch, read_url: str, message: str
) -> None:
    env = {"DATABASE_READ_URL": read_url}
    if "sslmode=disable" in read_url:
        env["DATABASE_SSLMODE"] = "disable"  # the variable wins over both URLs' queries
    container = make_container(monkeypatch, "postgresql://alex:pw@127.0.0.1/db", **env)
    with pytest.raises(ConfigurationError) as refused:
        container.replica_engines()
    assert message in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_plaintext_to_a_remote_replica_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = "postgresql://alex:pw@127.0.0.1/db?sslmode=disable"
    remote = f"{REPLICA}?sslmode=prefer"
    container = make_container(monkeypatch, local, DATABASE_READ_URL=f"{local}\n{remote}")
    with pytest.raises(ConfigurationError) as refused:
        container.replica_engines()
    assert "DATABASE_READ_URL (URL 2 of 2)" in str(refused.value)
    assert "ep-quiet-lake-654321" in str(refused.value)
    assert container.engine().url.query["sslmode"] == "disable"  # the primary is local


def test_a_space_in_a_password_must_be_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(monkeypatch, DATABASE_READ_URL=REPLICA.replace(",", " "))
    with pytest.raises(ConfigurationError) as refused:
        container.settings()
    assert "percent-encoded (%20)" in str(refused.value)
    for piece in PASSWORD.split(","):
        assert piece not in str(refused.value)
    encoded = REPLICA.replace(",", "%20")
    assert make_container(monkeypatch, DATABASE_READ_URL=encoded).settings().replicas[
        0
    ].url.password == PASSWORD.replace(",", " ")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_READ_MAX_LAG", "-1", "DATABASE_READ_MAX_LAG must be a number of seconds >= 0"),
        ("DATABASE_READ_MAX_LAG", "soon", "DATABASE_READ_MAX_LAG must be a number of seconds"),
        (
            "DATABASE_READ_FALLBACK",
            "replica",
            "DATABASE_READ_FALLBACK must be one of primary, fail",
        ),
        (
            "DATABASE_READ_LAG_CHECK_INTERVAL",
            "0",
            "DATABASE_READ_LAG_CHECK_INTERVAL must be a number of seconds > 0",
        ),
    ],
)
def test_bad_read_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_container(monkeypatch, NEON, DATABASE_READ_URL=REPLICA, **{variable: value}).settings()


def test_read_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_container(monkeypatch).settings()
    assert (settings.read_max_lag, settings.read_lag_check_interval) == (10, 1)
    assert settings.read_fallback == "primary"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def replica_set(count: int, clock: Clock, max_lag: float = 10) -> ReplicaSet:
    names = [f"replica {n}" for n in range(1, count + 1)]
    return ReplicaSet(names, max_lag=max_lag, lag_check_interval=1, fallback="primary", clock=clock)


CAUGHT_UP = Lag(in_recovery=True, seconds=0.0, behind_bytes=0)


def status(replicas: ReplicaSet, index: int) -> str:
    return replicas.states[index].status


def test_reads_take_the_replicas_in_turn() -> None:
    replicas = replica_set(3, Clock())
    firsts = [replicas.order()[0] for _ in range(6)]
    assert firsts == [0, 1, 2, 0, 1, 2]


def test_the_first_read_of_a_replica_measures_it_and_then_one_per_interval() -> None:
    clock = Clock()
    replicas = replica_set(1, clock)
    assert replicas.claim(0) == "probe"
    assert replicas.claim(0) == "use"  # another read, while the first measures
    assert replicas.measured(0, CAUGHT_UP)
    clock.now += 0.5
    assert replicas.claim(0) == "use"
    clock.now += 0.5
    assert replicas.claim(0) == "probe"


def test_without_a_lag_bound_a_replica_is_never_measured_on_the_way() -> None:
    clock = Clock()
    replicas = replica_set(1, clock, max_lag=0)
    assert replicas.claim(0) == "probe"  # its first connect says it is there
    replicas.reachable(0)
    clock.now += 60
    assert replicas.claim(0) == "use"


def test_an_unavailable_replica_is_retried_by_one_read_after_a_growing_back_off() -> None:
    clock = Clock()
    replicas = replica_set(2, clock)
    retries = []
    for _ in range(7):
        replicas.unavailable(0, OSError("connection refused"))
        started = clock.now
        while 0 not in replicas.order():
            clock.now += 0.25
        retries.append(clock.now - started)
        assert replicas.order()[0] == 0  # first in line: someone has to pay for the retry
        assert replicas.claim(0) == "probe"
        assert replicas.claim(0) is None  # one read retries it; the others skip it
        assert 0 not in replicas.order()
    assert retries == [1, 2, 4, 8, 16, 30, 30]
    assert replicas.measured(0, CAUGHT_UP)
    assert status(replicas, 0) == "ok"
    assert replicas.states[0].failures == 0


def test_a_replica_behind_the_bound_is_skipped_until_it_catches_up() -> None:
    clock = Clock()
    replicas = replica_set(2, clock)
    assert replicas.claim(0) == "probe"
    assert not replicas.measured(0, Lag(True, 12.5, 4096))
    assert status(replicas, 0) == "lagging"
    assert [0 not in replicas.order() for _ in range(4)] == [True] * 4
    clock.now += 1
    assert replicas.order()[0] == 0
    assert replicas.claim(0) == "probe"
    assert replicas.measured(0, Lag(True, 0.4, 0))
    assert status(replicas, 0) == "ok"


def test_the_error_event_and_the_router_count_one_failure_once() -> None:
    clock = Clock()
    replicas = replica_set(1, clock)
    replicas.unavailable(0, OSError("reset"))
    replicas.unavailable(0, OSError("reset"))
    assert replicas.states[0].failures == 1
