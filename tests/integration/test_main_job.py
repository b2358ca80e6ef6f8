"""`python -m backend` without DATABASE_URL: embedded PostgreSQL, served app, clean Ctrl-C."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from backend.embedded import PostgresServer, embedded_bindir, free_port, reachable_data_dir
from tests.conftest import project_root


def get_health(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/db", timeout=5) as response:
            body: dict[str, object] = json.load(response)
            return body
    except OSError:
        return None


def run_main_job(data_dir: Path) -> tuple[str, dict[str, object]]:
    """Start `python -m backend`, wait for /health/db, Ctrl-C it; its output and health."""
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
    finally:
        job.send_signal(signal.SIGINT)
        output, _ = job.communicate(timeout=30)
    assert health is not None, f"the app did not answer: {output}"
    assert job.returncode == 0, output
    return output, health


def test_the_main_job_serves_on_an_embedded_database() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    output, health = run_main_job(data_dir)
    assert health["status"] == "ok"
    assert health["ssl"] is False  # the embedded build has no OpenSSL
    server = PostgresServer(embedded_bindir(), data_dir)
    assert "Embedded PostgreSQL" in output
    assert "postgres:***@127.0.0.1" in output
    assert server.password not in output
    assert "Traceback" not in output
    assert not server.is_running()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_as_root_a_data_folder_the_server_cannot_reach_moves_to_var_tmp() -> None:
    private = Path(tempfile.mkdtemp(prefix="backend-private-"))  # 0700, root's: nobody is out
    output, health = run_main_job(private / ".pgdata")
    assert health["status"] == "ok"
    assert "cannot enter: keeping the embedded server's data in /var/tmp/backend-pgdata-" in output
    moved = reachable_data_dir(private / ".pgdata")
    assert not PostgresServer(embedded_bindir(), moved).is_running()
    shutil.rmtree(moved, ignore_errors=True)
