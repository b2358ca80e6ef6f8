"""A real PgBouncer in transaction mode, TLS to clients: the stand-in for Neon's -pooler host."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.embedded import UNPRIVILEGED_USER, free_port


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


@dataclass
class PgBouncer:
    """PgBouncer 1.18 from Debian is stricter than Neon's (>= 1.22): it supports no prepared
    statements at all, which makes it the worst case for asyncpg."""

    upstream_port: int
    password: str = field(repr=False)  # the test server's superuser's, shown by no repr
    certificate: Path
    key: Path
    server_tls: bool
    pool_size: int = 20
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="backend-pgbouncer-")))
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = pgbouncer_binary()
        assert binary, "pgbouncer is not installed"
        for source, name in ((self.certificate, "client.crt"), (self.key, "client.key")):
            shutil.copyfile(source, self.root / name)
        (self.root / "userlist.txt").write_text(f'"postgres" "{self.password}"\n')
        (self.root / "pgbouncer.ini").write_text(self._config())
        user: int | None = None
        group: int | None = None
        extra_groups: list[int] | None = None
        if os.geteuid() == 0:  # PgBouncer, like PostgreSQL, refuses to run as root
            owner = pwd.getpwnam(UNPRIVILEGED_USER)
            for path in [self.root, *self.root.iterdir()]:
                os.chown(path, owner.pw_uid, owner.pw_gid)
            user, group, extra_groups = owner.pw_uid, owner.pw_gid, []
        (self.root / "client.key").chmod(0o600)
        self.process = subprocess.Popen(
            [binary, str(self.root / "pgbouncer.ini")],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen: {self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        log = self.root / "pgbouncer.log"
        return log.read_text()[-2000:] if log.exists() else ""

    def _config(self) -> str:
        root = self.root
        return f"""\
[databases]
* = host=127.0.0.1 port={self.upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {root}/userlist.txt
; Neon's pooler: transaction mode, TLS required from clients.
pool_mode = transaction
max_client_conn = 5000
default_pool_size = {self.pool_size}
client_tls_sslmode = require
client_tls_cert_file = {root}/client.crt
client_tls_key_file = {root}/client.key
server_tls_sslmode = {"require" if self.server_tls else "disable"}
; After a failed server login PgBouncer waits this long before the next (default 15 s): with
; the default, a restarted server stays out of reach for 15 s through the pooler.
server_login_retry = 1
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
"""
