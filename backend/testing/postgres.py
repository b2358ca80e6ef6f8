"""The Neon stand-in: one PostgreSQL per test run, a TLS front, and a pooler.

    client ──TLS──> PostgreSQL (TLS-only)                "direct", when the build has OpenSSL
    client ──TLS──> TlsFront ──plaintext──> PostgreSQL   "front": cold starts, latency, drops
    client ──TLS──> PgBouncer (transaction) ──> PostgreSQL   "pooler", when pgbouncer is here

Where the build has no OpenSSL (the embedded wheel), the front is what gives clients TLS, so
it is the default endpoint there.
"""

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from backend.embedded import PostgresServer, embedded_bindir, has_tls
from backend.embedded.watch import Watch
from backend.testing.front import TlsFront
from backend.testing.pgbouncer import PgBouncer, pgbouncer_binary

# Which way in a client takes: the server itself (TLS; "direct" without), the TLS front, or
# PgBouncer. (Not backend.db's Endpoint, a host and port a URL names.)
Door = Literal["default", "direct", "front", "pooler"]
FRONT_SOURCE = "127.0.0.2"  # the front's address towards PostgreSQL, allowed in plaintext


@dataclass
class TestServer:
    """The run's PostgreSQL, with its TLS front and its pooler: where the tests' databases
    live, and how clients reach them (`url()`, one endpoint or another)."""

    __test__ = False  # not a test class, whatever pytest makes of its name

    admin_url: URL
    tls: bool  # clients of the default endpoint get TLS
    direct_tls: bool  # PostgreSQL itself speaks TLS (so pg_stat_ssl sees it)
    ca_file: Path | None
    server: PostgresServer | None  # None when TEST_DATABASE_URL names an existing server
    front: TlsFront | None = None
    pooler: PgBouncer | None = None

    def url(self, database: str, endpoint: Door = "default") -> URL:
        if endpoint == "default":
            endpoint = "direct" if self.direct_tls or self.front is None else "front"
        port = {"direct": self.admin_url.port, "front": self._port(self.front)}.get(endpoint)
        if endpoint == "pooler":
            port = self._port(self.pooler)
        url = self.admin_url.set(database=database, port=port)
        if self.ca_file is not None and (endpoint != "direct" or self.direct_tls):
            # As a Neon URL is best used: TLS, and the certificate checked.
            url = url.update_query_dict(
                {"sslmode": "verify-full", "sslrootcert": str(self.ca_file)}
            )
        return url

    def suspend(self, database: str) -> int:
        """Neon's scale-to-zero as clients see it: every backend on `database` is terminated,
        and gone when this returns (a suspended compute has none; pg_terminate_backend only
        signals, and a pooler that met a backend still exiting would see no suspend).
        Autocommit: each look at pg_stat_activity is a snapshot of its own transaction."""
        engine = sa.create_engine(
            self.admin_url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT"
        )
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT pid, pg_terminate_backend(pid) AS signalled FROM pg_stat_activity"
                    " WHERE datname = :database AND pid <> pg_backend_pid()"
                ),
                {"database": database},
            )
            terminated = [pid for pid, signalled in rows if signalled]
            deadline = time.monotonic() + 10
            alive = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)")
            while connection.scalar(alive, {"pids": terminated}) and time.monotonic() < deadline:
                time.sleep(0.005)
        engine.dispose()
        return len(terminated)

    @staticmethod
    def _port(part: TlsFront | PgBouncer | None) -> int:
        assert part is not None, "this endpoint is not running here"
        return part.port


def choose_bindir() -> Path:
    """BACKEND_PG_BINDIR; else a PostgreSQL on the machine built with OpenSSL; else the wheel."""
    if configured := os.environ.get("BACKEND_PG_BINDIR"):
        return Path(configured)
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if has_tls(bindir):
            return bindir
    return embedded_bindir()


class Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1, as files."""

    def __init__(self, folder: Path) -> None:
        self.authority = trustme().CA()
        server = self.authority.issue_cert("127.0.0.1", "localhost")
        self.ca_file = folder / "ca.pem"
        self.cert_file = folder / "server.crt"
        self.key_file = folder / "server.key"
        self.authority.cert_pem.write_to_path(str(self.ca_file))
        server.cert_chain_pems[0].write_to_path(str(self.cert_file))
        server.private_key_pem.write_to_path(str(self.key_file))


# A throwaway cluster belongs in memory: CREATE DATABASE … TEMPLATE took 9-11 ms on tmpfs
# and 68-72 ms on this project's disk (fsync off either way), and a test in database mode pays
# it each time. Only where tmpfs has room for a few clusters (Docker's /dev/shm is 64 MB).
MEMORY_FOLDER = Path("/dev/shm")  # noqa: S108 (a mkdtemp inside it: private from birth)
MEMORY_NEEDED = 1 << 30


def scratch_folder() -> str:
    """Where a temporary server goes: BACKEND_TEST_TMPDIR if set, else /dev/shm when it is
    there with 1 GiB free, else the temporary folder."""
    if configured := os.environ.get("BACKEND_TEST_TMPDIR"):
        return configured
    try:
        room = os.statvfs(MEMORY_FOLDER)
    except OSError:
        return tempfile.gettempdir()
    if room.f_bavail * room.f_frsize >= MEMORY_NEEDED and os.access(MEMORY_FOLDER, os.W_OK):
        return str(MEMORY_FOLDER)
    return tempfile.gettempdir()


def trustme() -> Any:
    """trustme, imported when certificates are made: it is a test-time dependency only."""
    try:
        import trustme
    except ImportError:
        raise MissingTestDependency(
            "backend.testing makes its TLS certificates with trustme, which is not installed: "
            "pip install 'fastapi-sqlmodel-neon[testing]' (or add trustme to your test "
            "dependencies)"
        ) from None
    return trustme


class MissingTestDependency(RuntimeError):
    """A package backend.testing needs at test time is not installed."""


def new_server(
    bindir: Path, certificates: Certificates | None, root: Path | None = None
) -> PostgresServer:
    """A server in `root` (kept), or in a new temporary folder (the caller removes it)."""
    # Not under pytest's tmp_path: that sits in a 0700 folder the server's user cannot reach.
    root = root or Path(tempfile.mkdtemp(prefix="backend-test-pg-", dir=scratch_folder()))
    tls = (
        (certificates.cert_file, certificates.key_file)
        if certificates and has_tls(bindir)
        else None
    )
    # fsync off: a crashed server (not machine) keeps what it wrote to the kernel, which is all
    # that "nothing acknowledged is lost" needs here. synchronous_commit stays on for that.
    settings = {"fsync": "off", "max_connections": "300"}
    return PostgresServer(bindir, root, tls=tls, settings=settings, plaintext_from=(FRONT_SOURCE,))


@contextmanager
def run_test_server(work_dir: Path, data_dir: Path | None = None) -> Iterator[TestServer]:
    """The run's test server: PostgreSQL, its front and its pooler, stopped at exit.
    `work_dir`, a temporary folder, holds the certificates; the server's own folder is a new
    temporary one, removed at exit, unless `data_dir` names one to keep between runs. If this
    process is killed outright, the server's watch stops the server, and a second watch
    (backend/embedded/watch.py too, told what to clear as it comes) ends PgBouncer and removes
    the temporary folders (`work_dir` included)."""
    if existing := os.environ.get("TEST_DATABASE_URL"):
        url = make_url(existing).set(drivername="postgresql+psycopg2")
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            tls = connection.scalar(
                sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
        engine.dispose()
        yield TestServer(url, bool(tls), bool(tls), None, None)
        return
    bindir = choose_bindir()
    certificates = Certificates(work_dir)
    server = new_server(bindir, certificates, data_dir)
    with ExitStack() as stack:
        leftovers = Watch(work_dir)
        stack.callback(leftovers.stopped)  # last: everything below is cleared by then
        leftovers.order("remove", work_dir)
        if data_dir is None:
            stack.callback(shutil.rmtree, server.root, ignore_errors=True)
            leftovers.order("wait", server.data_dir)
            leftovers.order("remove", server.root)
        server.start()
        stack.callback(server.stop)
        front = TlsFront(("127.0.0.1", server.port), certificates.cert_file, certificates.key_file)
        front.start()
        stack.callback(front.stop)
        pooler = None
        if pgbouncer_binary():
            pooler = PgBouncer(
                server.port,
                server.password,
                certificates.cert_file,
                certificates.key_file,
                server_tls=server.tls is not None,
            )
            leftovers.order("remove", pooler.root)
            pooler.start()
            stack.callback(pooler.stop)
            assert pooler.process is not None
            leftovers.order("kill", pooler.process.pid, pooler.root)  # its config's path
        yield TestServer(
            admin_url=server.url().update_query_dict(
                {"sslmode": "verify-full", "sslrootcert": str(certificates.ca_file)}
                if server.tls
                else {}
            ),
            tls=True,
            direct_tls=server.tls is not None,
            ca_file=certificates.ca_file,
            server=server,
            front=front,
            pooler=pooler,
        )
