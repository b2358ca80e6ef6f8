"""`python -m backend` without DATABASE_URL: embedded PostgreSQL, served app, clean Ctrl-C and
SIGTERM, and no server left behind by a SIGKILL."""

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


def start_main_job(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, object] | None]:
    """Start `python -m backend` on `data_dir`; the job, and its health once it answers."""
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
    health = None
    deadline = time.monotonic() + 60
    while health is None and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        health = get_health(port)
    return job, health


def run_main_job(
    data_dir: Path, stop: signal.Signals = signal.SIGINT
) -> tuple[str, dict[str, object]]:
    """Start `python -m backend`, wait for /health/db, send `stop`; its output and health."""
    job, health = start_main_job(data_dir)
    job.send_signal(stop)
    output, _ = job.communicate(timeout=30)
    assert health is not None, f"the app did not answer: {output}"
    assert job.returncode == 0, output
    return output, health


def processes_of(folder: Path) -> list[str]:
    """Command lines of the live processes that name `folder` (the postmaster names its data)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:  # it ended while we looked
            continue
        if str(folder) in command and not zombie and int(proc.name) != os.getpid():
            found.append(command)
    return found


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


def test_sigterm_stops_the_main_job_and_its_server_cleanly() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    server = PostgresServer(embedded_bindir(), data_dir)
    try:
        output, health = run_main_job(data_dir, stop=signal.SIGTERM)
        assert health["status"] == "ok"
        assert "Traceback" not in output
        assert not server.is_running()
        assert processes_of(data_dir) == []
    finally:
        server.stop()  # what a failure here leaves behind
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_killed_main_job_does_not_leave_its_server_running() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    job, health = start_main_job(data_dir)
    try:
        assert health is not None, "the app did not answer"
        assert processes_of(data_dir / "data"), "no postmaster for this data folder"
        job.kill()  # SIGKILL: no handler, no atexit, no finally
        job.wait()
        # Bounded, not timed: the watch needs a moment to notice and a fast shutdown to finish.
        deadline = time.monotonic() + 30
        while processes_of(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_of(data_dir) == []
        output, _ = job.communicate(timeout=30)
        assert "Traceback" not in output
    finally:
        job.kill()
        PostgresServer(embedded_bindir(), data_dir).stop()  # what a failure here leaves behind
        shutil.rmtree(data_dir, ignore_errors=True)
