"""`python -m backend` without DATABASE_URL: embedded PostgreSQL, served app, clean Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from backend.embedded import PostgresServer, embedded_bindir, free_port
from tests.conftest import project_root


def get_health(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/db", timeout=5) as response:
            body: dict[str, object] = json.load(response)
            return body
    except OSError:
        return None


def test_the_main_job_serves_on_an_embedded_database() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    job = subprocess.Popen(
        [sys.executable, "-m", "backend", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=project_root(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        health = None
        deadline = time.monotonic() + 60
        while health is None and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            health = get_health(port)
        assert health is not None, "the app did not answer"
        assert health["status"] == "ok"
        assert health["ssl"] is False  # the embedded build has no OpenSSL
    finally:
        job.send_signal(signal.SIGINT)
        output, _ = job.communicate(timeout=30)

    assert job.returncode == 0, output
    server = PostgresServer(embedded_bindir(), data_dir)
    assert "Embedded PostgreSQL" in output
    assert "postgres:***@127.0.0.1" in output
    assert server.password not in output
    assert "Traceback" not in output
    assert not server.is_running()
