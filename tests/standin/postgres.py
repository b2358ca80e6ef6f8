"""The suite's PostgreSQL: one server per test session, run like Neon (TLS only, SCRAM)."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import trustme
from sqlalchemy.engine import URL, make_url

from backend.embedded import PostgresServer, embedded_bindir, has_tls


@dataclass(frozen=True)
class SuiteDatabase:
    """Where the suite's databases live. `ca_file` verifies the server when it speaks TLS."""

    admin_url: URL
    tls: bool
    ca_file: Path | None
    server: PostgresServer | None  # None when TEST_DATABASE_URL names an existing server

    def url(self, database: str) -> URL:
        url = self.admin_url.set(database=database)
        if self.ca_file is not None:
            # As a Neon URL is used at its strictest: TLS, and the certificate checked.
            url = url.update_query_dict(
                {"sslmode": "verify-full", "sslrootcert": str(self.ca_file)}
            )
        return url


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
        self.authority = trustme.CA()
        server = self.authority.issue_cert("127.0.0.1", "localhost")
        self.ca_file = folder / "ca.pem"
        self.cert_file = folder / "server.crt"
        self.key_file = folder / "server.key"
        self.authority.cert_pem.write_to_path(str(self.ca_file))
        server.cert_chain_pems[0].write_to_path(str(self.cert_file))
        server.private_key_pem.write_to_path(str(self.key_file))


def new_server(bindir: Path, certificates: Certificates | None) -> PostgresServer:
    # Not under pytest's tmp_path: that sits in a 0700 folder the server's user cannot reach.
    root = Path(tempfile.mkdtemp(prefix="backend-test-pg-"))
    tls = (certificates.cert_file, certificates.key_file) if certificates else None
    # Durability is not under test here, and fsync is most of initdb's and a commit's time.
    settings = {"fsync": "off", "synchronous_commit": "off", "max_connections": "300"}
    return PostgresServer(bindir, root, tls=tls, settings=settings)


@contextmanager
def session_database(work_dir: Path) -> Iterator[SuiteDatabase]:
    if existing := os.environ.get("TEST_DATABASE_URL"):
        url = make_url(existing).set(drivername="postgresql+psycopg2")
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            tls = connection.scalar(
                sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
        engine.dispose()
        yield SuiteDatabase(url, bool(tls), None, None)
        return
    bindir = choose_bindir()
    certificates = Certificates(work_dir) if has_tls(bindir) else None
    server = new_server(bindir, certificates)
    server.start()
    try:
        ca_file = certificates.ca_file if certificates else None
        yield SuiteDatabase(server.url(), certificates is not None, ca_file, server)
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
