"""Start and stop a PostgreSQL cluster in a folder, with initdb and pg_ctl, watched and locked."""

import atexit
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import URL

from backend.embedded import lock
from backend.embedded.files import (
    as_owner,
    claim_folder,
    exists_as_owner,
    owner_can_run,
    private_copy,
    read_as_owner,
    run_as_owner,
    write_as_owner,
)
from backend.embedded.folder import (
    SUPERUSER,
    free_port,
    loopback_url,
    port_is_free,
    recorded_port,
    recorded_url,
)
from backend.embedded.watch import Watch

__all__ = ["AlreadyRunning", "PostgresServer", "running"]


class AlreadyRunning(RuntimeError):
    """Another live process runs the server of this folder."""

    def __init__(self, root: Path, pid: int | None) -> None:
        self.root, self.pid = root, pid
        url = recorded_url(root)
        at = f" at {url.render_as_string(hide_password=True)}" if url else ""
        by = f"process {pid}" if pid else "another process"
        super().__init__(f"the embedded PostgreSQL in {root} is already run by {by}{at}")


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in `root` (data/, password, port, postgresql.log), on a loopback
    port.

    `port` 0 (the default) is the folder's own: the one its last start recorded in `root/port`,
    so that psql, Alembic or an app pointed at it once keep working; a free one at its first
    start, and when another program has taken the recorded one since (then `moved_from` names
    that one, and the new one is recorded).

    `tls` is a (certificate, key) pair: with it the server accepts TLS connections only, as Neon
    does, except from the loopback addresses in `plaintext_from` (a TLS-terminating proxy on the
    same machine). `settings` are extra postgresql.conf lines, applied at each start.

    A started server lives no longer than the process that started it: stop() stops it, and if
    the process ends first, however it ends, a watch process does (watch.py). One
    process at a time runs the server of a folder (lock.py): start() raises
    AlreadyRunning while another, alive, does.
    """

    bindir: Path
    root: Path
    port: int = 0
    tls: tuple[Path, Path] | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    plaintext_from: tuple[str, ...] = ()
    _password: str | None = field(default=None, init=False, repr=False, compare=False)
    # A private copy of the binaries (files.private_copy), while one is in use.
    _copy: Path | None = field(default=None, init=False, repr=False, compare=False)
    _copied_bindir: Path | None = field(default=None, init=False, repr=False, compare=False)
    _watch: Watch | None = field(default=None, init=False, repr=False, compare=False)
    # The folder's lock (lock.take), while this object runs its server.
    _lock: int | None = field(default=None, init=False, repr=False, compare=False)
    moved_from: int | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        # Absolute, with its last name kept as given (not resolved): start() refuses a link.
        self.root = Path(os.path.abspath(self.root))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgresql.log"

    @property
    def password(self) -> str:
        if self._password is None:
            # Read as the server's user: as root, a `password` linked to one of root's files
            # would put that file into the URL.
            content = read_as_owner(self.root / "password")
            if content is None:
                raise RuntimeError(f"{self.root / 'password'} cannot be read: not started yet?")
            self._password = content.decode().strip()
        return self._password

    def url(self, database: str = "postgres") -> URL:
        return loopback_url("postgresql+psycopg2", self.password, self.port, database)

    def version(self) -> str:
        # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
        match = re.search(r"\) (\d+(?:\.\d+)*)", self._run_binary("postgres", "--version"))
        return match.group(1) if match else "unknown"

    def start(self) -> None:
        """Start the server, making the cluster first if `root` has none.

        Raises AlreadyRunning, touching nothing, while another live process runs it. A server
        left running by a run that was killed with its watch is stopped first.
        """
        claim_folder(self.root)
        self._take_lock()
        try:
            if self.is_running():  # ours (a restart), or a killed run's
                self._stop_server("fast")
            self._prepare_root()
            if not exists_as_owner(self.data_dir / "PG_VERSION"):
                self._initdb()
            self._choose_port()
            self._configure()
            self._start_watch()  # before pg_ctl: a kill while it waits for the server is covered
            self._run_binary(
                "pg_ctl",
                *("-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60"),
                *("-o", f"-p {self.port}", "start"),
            )
        except BaseException:  # Ctrl-C included: nothing half-started is left behind
            self.stop()
            raise

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop: `fast` ends sessions cleanly; `immediate` is a crash, recovered at next start.

        The server this object started, or one a killed run left in its folder; never one
        another live process runs (AlreadyRunning).
        """
        try:
            if self.is_running():
                self._take_lock()  # a no-op if ours; AlreadyRunning if a live process's
                self._stop_server(mode)
        finally:
            self._stop_watch()
            self._remove_copy()
            if self._lock is not None:
                lock.release(self._lock)
                self._lock = None

    def is_running(self) -> bool:
        if not exists_as_owner(self.data_dir / "postmaster.pid"):
            return False
        status = run_as_owner(
            [self._bindir() / "pg_ctl", "-D", self.data_dir, "status"], capture_output=True
        )
        return status.returncode == 0

    def _take_lock(self) -> None:
        if self._lock is not None:
            return  # a restart: ours already
        try:
            self._lock = lock.take(self.root)
        except lock.Locked as locked:
            raise AlreadyRunning(self.root, locked.pid) from None

    def _stop_server(self, mode: Literal["fast", "immediate"]) -> None:
        try:
            self._run_binary("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        except RuntimeError:
            # A killed run's server may be stopping under its own watch as we look.
            if self.is_running():
                raise

    def _prepare_root(self) -> None:
        password = (secrets.token_urlsafe(24) + "\n").encode()
        write_as_owner(self.root / "password", password, replace=False)
        self._password = None

    def _choose_port(self) -> None:
        self.moved_from = None
        if self.port == 0:
            recorded = recorded_port(self.root)
            if recorded is not None and port_is_free(recorded):
                self.port = recorded
            else:
                # Moving is better than refusing: the recorded port came from the ephemeral
                # range, where any program's outgoing connection may hold it for a while.
                self.moved_from = recorded
                self.port = free_port()
        write_as_owner(self.root / "port", f"{self.port}\n".encode())

    def _initdb(self) -> None:
        self._run_binary(
            "initdb",
            *("-D", str(self.data_dir), "-U", SUPERUSER, "--pwfile", str(self.root / "password")),
            *("--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C"),
        )

    def _configure(self) -> None:
        lines = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",  # TCP only: one way in, the one the URL names
            "ssl": "on" if self.tls else "off",
            **self.settings,
        }
        method = "hostssl" if self.tls else "host"
        if self.tls:
            for source, name in zip(self.tls, ("server.crt", "server.key"), strict=True):
                # Written with mode 0600: PostgreSQL refuses a key others can read.
                write_as_owner(self.data_dir / name, Path(source).read_bytes())
            lines |= {"ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"}
        # postgresql.auto.conf is read last, so these win over the defaults initdb wrote.
        write_as_owner(
            self.data_dir / "postgresql.auto.conf",
            "".join(f"{key} = {value}\n" for key, value in lines.items()).encode(),
        )
        # With TLS, hostssl is the only entry for clients: a plaintext one finds no line and is
        # refused.
        entries = [f"{method} all all 127.0.0.1/32 scram-sha-256"]
        entries += [f"host all all {address}/32 scram-sha-256" for address in self.plaintext_from]
        write_as_owner(self.data_dir / "pg_hba.conf", ("\n".join(entries) + "\n").encode())

    def _run_binary(self, name: str, *args: str) -> str:
        with tempfile.TemporaryFile("w+") as output:
            # Output to a file, not a pipe: the postmaster pg_ctl starts would inherit a pipe
            # and keep it open, and reading it would never end.
            result = run_as_owner(
                [self._bindir() / name, *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            output.seek(0)
            text = output.read()
        if result.returncode != 0:
            log = (read_as_owner(self.log_file) or b"")[-2000:].decode(errors="replace")
            raise RuntimeError(f"{name} failed ({result.returncode}): {text.strip()}\n{log}")
        return text

    def _bindir(self) -> Path:
        """`bindir`, or a private copy of its package when the server's user cannot reach it."""
        if self._copied_bindir is not None:
            return self._copied_bindir
        if owner_can_run(self.bindir / "postgres"):
            return self.bindir
        self._copy, self._copied_bindir = private_copy(self.bindir)
        atexit.register(self._remove_copy_unless_watched)
        return self._copied_bindir

    def _remove_copy(self) -> None:
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)
            atexit.unregister(self._remove_copy_unless_watched)
        self._copy = self._copied_bindir = None

    def _remove_copy_unless_watched(self) -> None:
        # At exit with the server still up, the watch stops it with the copy's pg_ctl, then
        # removes the copy itself.
        if self._watch is None:
            self._remove_copy()

    def _start_watch(self) -> None:
        self._stop_watch()
        # Should we die first, it stops the server and removes the private copy. It holds the
        # folder's lock: a killed run's server is never taken for stale while being stopped.
        self._watch = Watch(self.data_dir, pass_fds=() if self._lock is None else (self._lock,))
        pg_ctl, owner = self._bindir() / "pg_ctl", as_owner()  # the copy's pg_ctl, if any
        self._watch.order(
            "stop", pg_ctl, self.data_dir, owner.get("user", -1), owner.get("group", -1)
        )
        if self._copy:
            self._watch.order("remove", self._copy)

    def _stop_watch(self) -> None:
        """Tell the watch the server is stopped, and let it end."""
        if self._watch is not None:
            self._watch.stopped()
            self._watch = None


@contextmanager
def running(server: PostgresServer) -> Iterator[PostgresServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
