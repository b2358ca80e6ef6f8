"""`python -m backend` with a PORT that is not a port: one clear line, no traceback (issue 9)."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "80 80"])
def test_a_bad_port_variable_is_one_clear_line(port: str) -> None:
    env = {**os.environ, "PORT": port, "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db"}
    result = subprocess.run(
        [sys.executable, "-m", "backend"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"python -m backend: PORT must be a port number from 1 to 65535, got {port!r}"
    ]
