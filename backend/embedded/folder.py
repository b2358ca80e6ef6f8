"""A server's folder, read without starting it: where it can live, its port and URL, who runs it."""

import hashlib
import socket
from pathlib import Path

from sqlalchemy.engine import URL

from backend.embedded import lock
from backend.embedded.files import as_owner, read_as_owner, run_as_owner

__all__ = [
    "SUPERUSER",
    "free_port",
    "loopback_url",
    "port_is_free",
    "reachable_data_dir",
    "recorded_port",
    "recorded_url",
    "running_elsewhere",
]

SUPERUSER = "postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether the server could listen on 127.0.0.1:`port` now."""
    with socket.socket() as probe:
        # As the postmaster binds: the TIME_WAIT of our last run's connections does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def recorded_port(root: Path) -> int | None:
    """The port the server of `root` listened on at its last start."""
    content = read_as_owner(root / "port")  # the server's user's file: as root, read as that user
    try:
        port = int(content or b"")
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


def recorded_url(root: Path) -> URL | None:
    """The libpq URL of the server kept in `root`, whether it runs or not (None if it never
    started): what `psql`, Alembic or DATABASE_URL take."""
    port = recorded_port(root)
    password = read_as_owner(root / "password")
    if port is None or not password:
        return None
    return loopback_url("postgresql", password.decode().strip(), port, "postgres")


def running_elsewhere(root: Path) -> int | None:
    """The process that runs the server of `root`, if one does (0 if it did not say which)."""
    if not lock.held(root):
        return None
    return lock.holder(root) or 0


def loopback_url(driver: str, password: str, port: int, database: str) -> URL:
    return URL.create(
        driver,
        username=SUPERUSER,
        password=password,
        host="127.0.0.1",
        port=port,
        database=database,
    )


def reachable_data_dir(requested: Path) -> Path:
    """`requested`, or, where the server's user cannot enter its parent folder (a private
    home or mkdtemp, when running as root), a folder of its own under /var/tmp that stays the
    same for the same request, so the data survives restarts there too.

    That is a predictable name in a shared folder: PostgresServer.start() refuses it if it is a
    link or someone else's, at the moment it takes it (files.claim_folder).
    """
    parent = requested.parent
    while not parent.exists():
        parent = parent.parent
    enter = ["/bin/sh", "-c", '[ -x "$1" ]', "sh", str(parent)]
    if not as_owner() or run_as_owner(enter).returncode == 0:
        return requested
    digest = hashlib.sha256(str(requested).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"backend-pgdata-{digest}"  # noqa: S108 (checked at start)
