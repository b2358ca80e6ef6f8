"""Importing the package reads no variable and opens no connection."""

import os
import subprocess
import sys

from tests.conftest import project_root

PROGRAM = """
import socket
def refuse(*args, **kwargs):
    raise AssertionError("a connection was opened at import")
socket.socket.connect = refuse
socket.create_connection = refuse
import backend, backend.main, backend.container, backend.db.session, backend.db.engines.build
import backend.db.engines.health, backend.api.health, backend.embedded, backend.__main__
import backend.db.sessions.scope
from backend.main import app
assert app.state.container.built_engines() == []  # chosen with the app; nothing built
print("imported")
"""


def test_importing_backend_needs_no_database_url_and_connects_nowhere() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=project_root(),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"
