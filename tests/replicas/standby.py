"""A TLS-only primary and real streaming standbys of it: the stand-in for Neon read replicas.

    primary  (TLS only, wal_level=replica, a `hostssl replication` line)
      └── standby N: pg_basebackup -R of the primary, hot_standby=on, its own port, TLS only,
                     streaming from the primary over TLS

Built with backend.embedded's PostgresServer, so as root every server, and pg_basebackup, run
as `nobody`, and every file in their folders is written as `nobody` (backend/embedded/files.py).
"""

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from backend.embedded import PostgresServer, has_tls
from backend.embedded.files import claim_folder, read_as_owner, run_as_owner, write_as_owner
from backend.testing.postgres import FRONT_SOURCE, Certificates, choose_bindir

# As the suite's server (backend/testing/postgres.py): a crashed server keeps what it wrote.
COMMON = {"fsync": "off", "max_connections": "200"}
# A standby stopped for a while catches up from the WAL the primary kept for it.
PRIMARY = {**COMMON, "wal_level": "replica", "max_wal_senders": "10", "wal_keep_size": "256MB"}


class ReplicationPrimary(PostgresServer):
    """The suite's TLS-only server, plus the pg_hba.conf line streaming replication needs."""

    def _configure(self) -> None:
        super()._configure()
        hba = self.data_dir / "pg_hba.conf"
        lines = read_as_owner(hba) or b""
        write_as_owner(hba, lines + b"hostssl replication all 127.0.0.1/32 scram-sha-256\n")


@dataclass
class Cluster:
    primary: PostgresServer
    standbys: list[PostgresServer]
    ca_file: Path
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    def url(self, server: PostgresServer, database: str = "postgres") -> URL:
        """How a client reaches `server`: TLS, the certificate checked, as a Neon URL is used."""
        return server.url(database).update_query_dict(
            {"sslmode": "verify-full", "sslrootcert": str(self.ca_file)}
        )

    def engine(self, server: PostgresServer, database: str = "postgres") -> sa.Engine:
        return sa.create_engine(
            self.url(server, database), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )

    def wait_until_replayed(self, standby: PostgresServer, timeout: float = 30) -> None:
        """Until `standby` has replayed everything the primary has written so far."""
        with self.engine(self.primary).connect() as primary:
            target = primary.scalar(sa.text("SELECT pg_current_wal_lsn()"))
        engine = self.engine(standby)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    with engine.connect() as connection:
                        behind = connection.scalar(
                            sa.text("SELECT pg_wal_lsn_diff(:target, pg_last_wal_replay_lsn())"),
                            {"target": target},
                        )
                    if behind is not None and behind <= 0:
                        return
                except sa.exc.OperationalError:
                    pass  # starting up
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{standby.root} did not replay up to {target}")
                time.sleep(0.05)
        finally:
            engine.dispose()


def start_standby(primary: PostgresServer, name: str) -> PostgresServer:
    """A streaming standby of `primary`, started; the caller stops it and removes its root."""
    root = Path(tempfile.mkdtemp(prefix=f"backend-test-{name}-"))
    claim_folder(root)  # as root: made nobody's, so that pg_basebackup (as nobody) writes in it
    # The standby is a copy of the primary's cluster: the same superuser and password.
    write_as_owner(root / "password", f"{primary.password}\n".encode())
    # TLS without verification on the replication link: both ends are this machine's servers.
    # The standby runs with our environment: as root, HOME=/root, where its libpq would look
    # for a client certificate (~/.postgresql/postgresql.crt) and fail, as nobody, with
    # "Permission denied"; a certificate file that does not exist means none.
    conninfo = (
        f"host=127.0.0.1 port={primary.port} user=postgres sslmode=require "
        f"sslcert={root}/no-client-certificate application_name={name}"
    )
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": primary.password}
    backup = run_as_owner(
        [
            primary.bindir / "pg_basebackup",
            *("--dbname", conninfo, "--pgdata", str(root / "data")),
            *("--wal-method=stream", "--checkpoint=fast", "--no-sync", "--write-recovery-conf"),
        ],
        env=environment,
        capture_output=True,
        text=True,
    )
    if backup.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_basebackup failed: {backup.stderr.strip()}")
    # --write-recovery-conf made standby.signal; PostgresServer rewrites postgresql.auto.conf at
    # each start, so the link to the primary is one of its settings.
    standby = PostgresServer(
        primary.bindir,
        root,
        tls=primary.tls,
        plaintext_from=(FRONT_SOURCE,),  # the TLS front (Neon's proxy stand-in) may sit before it
        settings={
            **COMMON,
            "hot_standby": "on",
            "primary_conninfo": f"'{conninfo} password={primary.password}'",
        },
    )
    standby.start()
    return standby


@contextmanager
def replication_cluster(standbys: int = 1) -> Iterator[Cluster]:
    """A TLS-only primary and `standbys` streaming standbys, stopped and removed at the end."""
    bindir = choose_bindir()
    if not has_tls(bindir):
        raise RuntimeError(f"{bindir} has no TLS: the replicas' stand-in needs a TLS-only primary")
    with ExitStack() as stack:
        folder = Path(tempfile.mkdtemp(prefix="backend-test-certificates-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        certificates = Certificates(folder)
        primary = ReplicationPrimary(
            bindir,
            Path(tempfile.mkdtemp(prefix="backend-test-primary-")),
            tls=(certificates.cert_file, certificates.key_file),
            settings=PRIMARY,
        )
        primary.start()
        stack.callback(shutil.rmtree, primary.root, ignore_errors=True)
        stack.callback(primary.stop)
        servers = []
        for number in range(1, standbys + 1):
            standby = start_standby(primary, f"standby{number}")
            stack.callback(shutil.rmtree, standby.root, ignore_errors=True)
            stack.callback(standby.stop)
            servers.append(standby)
        yield Cluster(primary, servers, certificates.ca_file)
