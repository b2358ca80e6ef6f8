"""Where a URL connects, on both paths: host lists, hostaddr, ports, libpq's PG* variables.

Issue 9: the TLS rule looked only at the URL's host, and the async path dropped the host, port,
hostaddr, user, password and database given as query parameters (connecting to localhost:5432).
Nothing here opens a connection: the drivers' connect() arguments are captured instead.
"""

import ssl

import psycopg2
import pytest

from backend import Container
from backend.settings import ConfigurationError
from tests.unit.drivers import (
    asyncpg_addresses,
    asyncpg_arguments,
    libpq_addresses,
    psycopg2_arguments,
)
from tests.unit.test_settings import NEON, SECRET, make_container

DEFAULT_SOCKET_DIR = "/var/run/postgresql"  # the libpq of psycopg2-binary's, checked below
REMOTE = "192.0.2.2"  # TEST-NET-1: never routed, and never connected to here


def both_arguments(
    monkeypatch: pytest.MonkeyPatch, url: str, **env: str
) -> tuple[dict[str, object], dict[str, object]]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    container = make_container(monkeypatch, url)
    return psycopg2_arguments(container.engine()), asyncpg_arguments(container.async_engine())


# Every way the issue found to name a remote address besides the URL's host.
SPELLINGS = [
    pytest.param(f"postgresql://u:{SECRET}@localhost:5433/db?hostaddr={REMOTE}", {}, id="hostaddr"),
    pytest.param(
        f"postgresql://u:{SECRET}@/db?host=/nonexistent,{REMOTE}&port=5433,5433", {}, id="list"
    ),
    pytest.param(f"postgresql://u:{SECRET}@localhost,{REMOTE}:5433/db", {}, id="netloc-list"),
    pytest.param(
        f"postgresql://u:{SECRET}@/db?host=localhost:5433&host={REMOTE}:5433", {}, id="sa-list"
    ),
    pytest.param(f"postgresql://u:{SECRET}@/db", {"PGHOST": REMOTE}, id="PGHOST"),
    pytest.param(f"postgresql://u:{SECRET}@localhost/db", {"PGHOSTADDR": REMOTE}, id="PGHOSTADDR"),
    pytest.param(f"postgresql://u:{SECRET}@127.0.0.1/db", {"PGHOST": REMOTE}, id="PGHOST-ignored"),
]


@pytest.mark.parametrize(("url", "env"), SPELLINGS)
def test_every_address_either_driver_may_reach_gets_tls(
    monkeypatch: pytest.MonkeyPatch, url: str, env: dict[str, str]
) -> None:
    sync, async_ = both_arguments(monkeypatch, url, **env)
    addresses = libpq_addresses(sync, env)
    remote = any(host == REMOTE for host, _ in addresses)
    assert sync["sslmode"] == ("require" if remote else "prefer")
    if remote:
        # An SSLContext never falls back to plaintext (asyncpg treats it as require).
        assert async_["ssl"] == "require" or isinstance(async_["ssl"], ssl.SSLContext)
    else:
        assert async_["ssl"] == "prefer"
    # ...and both reach the same servers, in the same order.
    assert asyncpg_addresses(async_) == addresses


@pytest.mark.parametrize(("url", "env"), SPELLINGS[:-1])
@pytest.mark.parametrize("sslmode", ["disable", "allow", "prefer"])
def test_plaintext_is_refused_naming_the_remote_address(
    monkeypatch: pytest.MonkeyPatch, url: str, env: dict[str, str], sslmode: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    container = make_container(monkeypatch, url, DATABASE_SSLMODE=sslmode)
    for engine in (container.engine, container.async_engine):
        with pytest.raises(ConfigurationError, match=f"plaintext to {REMOTE} ") as error:
            engine()
        assert SECRET not in str(error.value)
    allowed = make_container(monkeypatch, url, DATABASE_ALLOW_INSECURE="true")
    assert psycopg2_arguments(allowed.engine())["sslmode"] == sslmode


@pytest.mark.parametrize(("url", "env"), SPELLINGS[:-1])
def test_pgsslmode_cannot_weaken_tls_either(
    monkeypatch: pytest.MonkeyPatch, url: str, env: dict[str, str]
) -> None:
    # libpq (and asyncpg) would take PGSSLMODE for a URL without sslmode; so does the layer,
    # under the same rule, and it always hands the drivers an sslmode of their own.
    for name, value in {**env, "PGSSLMODE": "disable"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(
        ConfigurationError, match=f"sslmode=disable would allow plaintext to {REMOTE}"
    ):
        make_container(monkeypatch, url).engine()
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    sync, async_ = both_arguments(monkeypatch, url)
    assert sync["sslmode"] == "verify-full"
    assert isinstance(async_["ssl"], ssl.SSLContext)
    assert async_["ssl"].check_hostname


def test_the_message_names_where_the_address_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOSTADDR", REMOTE)
    container = make_container(monkeypatch, "postgresql://u:p@localhost/db?sslmode=disable")
    with pytest.raises(ConfigurationError, match=rf"plaintext to {REMOTE} \(from PGHOSTADDR\)"):
        container.engine()
    monkeypatch.delenv("PGHOSTADDR")
    # Found by the adversarial pass: a ?host= URL was reported as "plaintext to None".
    container = make_container(monkeypatch, f"postgresql://u:p@/db?host={REMOTE}&sslmode=prefer")
    with pytest.raises(ConfigurationError, match=rf"plaintext to {REMOTE} \(from host in DATA"):
        container.engine()


@pytest.mark.parametrize(
    ("url", "env"),
    [
        # The query's words, which the async path used to drop.
        ("postgresql://@/?host=127.0.0.1&port=6543&user=app&password={}&dbname=shop", {}),
        ("postgresql://x:{}@ignored:1/ignored?host=127.0.0.1&port=6543&user=app&dbname=shop", {}),
        ("postgresql://app:{}@localhost/shop?hostaddr=127.0.0.1&port=6543", {}),
        # libpq's environment, which asyncpg reads differently (or, for PGHOSTADDR, not at all).
        ("postgresql://:{}@/", {"PGHOST": "127.0.0.1", "PGPORT": "6543", "PGUSER": "app",
                                "PGDATABASE": "shop"}),
        ("postgresql://app:{}@localhost:6543/shop", {"PGHOSTADDR": "127.0.0.1"}),
    ],
)  # fmt: skip
def test_both_paths_reach_the_same_server_database_and_user(
    monkeypatch: pytest.MonkeyPatch, url: str, env: dict[str, str]
) -> None:
    sync, async_ = both_arguments(monkeypatch, url.format(SECRET), **env)
    assert libpq_addresses(sync) == asyncpg_addresses(async_) == [("127.0.0.1", 6543)]
    assert (sync["user"], sync["dbname"], sync["password"]) == ("app", "shop", SECRET)
    assert (async_["user"], async_["database"], async_["password"]) == ("app", "shop", SECRET)


def test_no_host_means_libpqs_socket_folder_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    # asyncpg would try /run/postgresql, /var/run/postgresql, /tmp and then localhost:5432.
    sync, async_ = both_arguments(monkeypatch, "postgresql://app:pw@/shop")
    assert libpq_addresses(sync) == asyncpg_addresses(async_) == [(DEFAULT_SOCKET_DIR, 5432)]
    assert sync["sslmode"] == "prefer"


def test_the_socket_folder_is_the_one_this_libpq_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.db.connection.target import DEFAULT_SOCKET_DIR as ours

    assert ours == DEFAULT_SOCKET_DIR
    # Nothing listens on port 1: libpq's error names the socket it tried.
    with pytest.raises(psycopg2.OperationalError, match=f'"{DEFAULT_SOCKET_DIR}/.s.PGSQL.1"'):
        psycopg2.connect(port=1, dbname="x", user="x")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@h.example.com:99999/db",
        "postgresql://u:p@h.example.com:65536/db",
        "postgresql://u:p@h.example.com:-1/db",
        "postgresql://u:p@h.example.com:0/db",  # SQLAlchemy dropped it: libpq then used 5432
        "postgresql://u:p@/db?host=h.example.com&port=0",
        "postgresql://u:p@/db?host=a.example.com,b.example.com&port=5432,70000",
        "postgresql://u:p@/db?host=a.example.com:99999",
    ],
)
def test_ports_out_of_range_are_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"port.* must be a port number from 1 to 65535"):
        make_container(monkeypatch, url).engine()


def test_pgport_out_of_range_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPORT", "0")
    with pytest.raises(ConfigurationError, match=r"^PGPORT must be a port number"):
        make_container(monkeypatch, "postgresql://u:p@localhost/db").engine()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # Issue 9, item 12: each was a raw library error (NoSuchModuleError, ArgumentError).
        (f"{NEON}?plugin=x", "plugin in DATABASE_URL names a SQLAlchemy plugin"),
        ("postgresql://u:p@/db?host=a.example.com,b.example.com,c.example.com&port=1,2",
         "gives 2 ports for 3 hosts"),
        ("postgresql://u:p@/db?host=a.example.com,b.example.com&hostaddr=192.0.2.1",
         "names 2 hosts and hostaddr in DATABASE_URL 1 addresses"),
        ("postgresql://u:p@/db?host=a.example.com:1&host=b.example.com:2&port=3",
         "mixes host=h1:p1&host=h2:p2 with port="),
        ("postgresql://u:p@a.example.com/db?hostaddr=b.example.com", "numeric IP addresses"),
        (f"{NEON}?service=prod", "service in DATABASE_URL names a pg_service.conf entry"),
        (f"{NEON}?sslmode=require&sslmode=disable", "sslmode appears more than once"),
    ],
)  # fmt: skip
def test_what_the_libraries_refused_raw_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    container = make_container(monkeypatch, url)
    for engine in (container.engine, container.async_engine):
        with pytest.raises(ConfigurationError, match=message) as error:
            engine()
        assert error.value.__cause__ is None
        assert SECRET not in str(error.value)


def test_pgservice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # psycopg2 (libpq) would read pg_service.conf; asyncpg ignores it for keyword arguments.
    monkeypatch.setenv("PGSERVICE", "prod")
    with pytest.raises(ConfigurationError, match=r"^PGSERVICE names a pg_service\.conf entry"):
        make_container(monkeypatch).settings()


@pytest.mark.parametrize(
    "url",
    [
        NEON.replace("123456.", "123456-POOLER."),  # host names are case-insensitive
        NEON.replace("123456.", "123456-Pooler."),
        "postgresql://u:p@/db?host=ep-x-123456-pooler.us-east-2.aws.neon.tech",
        "postgresql://u:p@/db?host=ep-x-123456.us-east-2.aws.neon.tech,ep-x-123456-pooler.us-east-2.aws.neon.tech",
    ],
)
def test_the_pooler_is_recognised_on_every_host_in_any_case(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    container = make_container(monkeypatch, url)
    assert container.connection_plan().is_pooler
    args = asyncpg_arguments(container.async_engine())
    assert (args["statement_cache_size"], args["prepared_statement_cache_size"]) == (0, 0)
    # The read engine sends no startup options to PgBouncer (unsupported startup parameter).
    assert "options" not in psycopg2_arguments(container.read_engine())


def test_the_pooler_is_recognised_through_pghost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "ep-x-123456-pooler.us-east-2.aws.neon.tech")
    assert make_container(monkeypatch, "postgresql://u:p@/db").connection_plan().is_pooler


def test_an_unset_url_reads_no_libpq_variable_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", REMOTE)
    Container()  # reads nothing until its settings are asked for
