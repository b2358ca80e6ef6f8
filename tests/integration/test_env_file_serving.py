"""`python -m backend` in a folder whose .env holds DATABASE_URL serves on that database, as a
developer following Neon's quickstart runs it."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sqlalchemy.engine import URL

from backend.embedded import free_port


def test_the_main_job_serves_on_the_database_url_in_env(database_url: URL, tmp_path: Path) -> None:
    password = database_url.password
    assert password
    (tmp_path / ".env").write_text(
        f"DATABASE_URL='{database_url.render_as_string(hide_password=False)}'\n"
    )
    port = free_port()
    job = subprocess.Popen(
        [sys.executable, "-m", "backend", "--port", str(port)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PG"))},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    health = None
    deadline = time.monotonic() + 60
    while health is None and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/db", timeout=5) as answer:
                health = json.load(answer)
        except OSError:
            pass
    job.send_signal(signal.SIGINT)
    output, _ = job.communicate(timeout=30)
    assert health is not None, output
    assert health["status"] == "ok"
    assert "Using DATABASE_URL from .env" in output
    assert f":{database_url.port}/{database_url.database}" in output  # the startup line's URL
    assert not (tmp_path / ".pgdata").exists()  # no embedded server was started
    assert password not in output
