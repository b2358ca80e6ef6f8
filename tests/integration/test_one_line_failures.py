"""A bad setting stops `python -m backend` and `python -m backend check` with one line (the
variable, the rule, the fix) and exit code 3; under plain `uvicorn backend.main:app` the same
sentence is the last line of the startup failure. And `--workers` reaches uvicorn."""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from backend.embedded import free_port
from backend.testing.drivers import async_driver, run_driver, with_run_driver
from tests.conftest import project_root

UNREACHABLE = "postgresql://u:p@127.0.0.1:1/db"  # never connected to: the settings stop first
STOPPED = "ERROR:    Application startup failed. Exiting."

# (variables, the sentence that names the setting)
BAD_SETTINGS = [
    ({"DATABASE_POOL_SIZE": "ten"}, "DATABASE_POOL_SIZE must be an integer >= 1, got 'ten'"),
    ({"DATABASE_MAX_OVERFLOW": "-1"}, "DATABASE_MAX_OVERFLOW must be an integer >= 0, got '-1'"),
    (
        {"DATABASE_POOL_TIMEOUT": "0"},
        "DATABASE_POOL_TIMEOUT must be a number of seconds > 0, got '0'",
    ),
    (
        {"DATABASE_READ_POOL_SIZE": "0"},
        "DATABASE_READ_POOL_SIZE must be an integer >= 1, or empty, got '0'",
    ),
    (
        {"DATABASE_SSLMODE": "bogus"},
        "DATABASE_SSLMODE must be one of disable, allow, prefer, require, verify-ca, "
        "verify-full, got 'bogus'",
    ),
    (
        {"DATABASE_POOLER": "maybe"},
        "DATABASE_POOLER must be one of auto, pgbouncer, none, got 'maybe'",
    ),
    (
        {"DATABASE_URL": "mysql://u:p@127.0.0.1/db"},
        "DATABASE_URL must be a PostgreSQL URL (postgresql://…), got scheme 'mysql'",
    ),
    (
        {"DATABASE_URL": "postgresql://u:p@127.0.0.1:99999/db"},
        "port in DATABASE_URL must be a port number from 1 to 65535, got '99999'",
    ),
    (
        # A documentation address: refused by the rule, never contacted.
        {"DATABASE_URL": "postgresql://u:p@192.0.2.10/db?sslmode=disable"},
        "sslmode=disable would allow plaintext to 192.0.2.10 (from host in DATABASE_URL), and "
        "Neon refuses connections without TLS: use DATABASE_SSLMODE=require (or verify-full), "
        "or set DATABASE_ALLOW_INSECURE=true if this host really is on a trusted network",
    ),
    (
        # Read by the async path only, which is built on first use: it used to pass the start.
        {"DATABASE_URL": f"{UNREACHABLE}?command_timeout=soon"},
        "command_timeout in DATABASE_URL must be a number, got 'soon'",
    ),
    (
        {"DATABASE_URL": f"{UNREACHABLE}?sslrootcert=/nonexistent/ca.pem"},
        "sslrootcert in DATABASE_URL names /nonexistent/ca.pem, which cannot be read "
        "(No such file or directory)",
    ),
    (
        {"BACKEND_CONFIG": "/nonexistent/config.yml"},
        "BACKEND_CONFIG / config_file /nonexistent/config.yml cannot be read as YAML: "
        "FileNotFoundError",
    ),
    (
        {"PGSERVICE": "production"},
        "PGSERVICE names a pg_service.conf entry, which psycopg2 (libpq) reads and asyncpg does "
        "not, so the two engines would reach different servers: put its parameters in "
        "DATABASE_URL",
    ),
]
IDS = [
    next(iter(variables)) + "=" + next(iter(variables.values())) for variables, _ in BAD_SETTINGS
]


def environment(**variables: str) -> dict[str, str]:
    ours = ("DATABASE_", "PG", "BACKEND_CONFIG", "WEB_CONCURRENCY", "PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return env | {"DATABASE_URL": UNREACHABLE} | variables


def run(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=project_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(("variables", "sentence"), BAD_SETTINGS, ids=IDS)
@pytest.mark.parametrize(
    "command", [(), ("--workers", "2"), ("check",), ("check", "--workers", "2")], ids=" ".join
)
def test_python_m_backend_says_a_bad_setting_in_one_line(
    variables: dict[str, str], sentence: str, command: tuple[str, ...]
) -> None:
    result = run(sys.executable, "-m", "backend", *command, env=environment(**variables))
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr.splitlines() == [f"python -m backend: {sentence}"]


@pytest.mark.parametrize(("variables", "sentence"), BAD_SETTINGS, ids=IDS)
def test_under_uvicorn_the_sentence_is_the_last_line_of_the_failure(
    variables: dict[str, str], sentence: str
) -> None:
    port = str(free_port())
    result = run(
        sys.executable, "-m", "uvicorn", "backend.main:app", "--port", port,
        env=environment(**variables),
    )  # fmt: skip
    assert result.returncode == 3
    lines = result.stderr.rstrip().splitlines()
    assert lines[-1] == STOPPED
    assert lines[-2:-1] in ([""], [])  # uvicorn ends the traceback with an empty line
    # Not the blank lines, nor the ~~~^^^ position markers Python 3.13 prints under more lines.
    failure = [line for line in lines if line.strip(" ~^")]
    assert failure[-2] == f"backend.settings.errors.ConfigurationError: {sentence}"
    start = next(i for i, line in enumerate(failure) if "Traceback" in line)
    # Starlette's and the lifespan's few frames (17 lines with the sentence), not the 38 that
    # dependency-injector's frames made of it.
    assert len(failure[start:-1]) <= 20, result.stderr


# A service's own YAML of the wrong shape, and bytes that are not UTF-8: (file contents or
# None, variables, the sentence after the file's name or the whole sentence).
MALFORMED = {
    "database is a list": (b"database:\n  - url\n", {}, ": `database` must be a mapping"),
    "database is a string": (b"database: postgres\n", {}, ": `database` must be a mapping"),
    "url_query_defaults is a list": (
        b"database:\n  url_query_defaults: [sslmode]\n",
        {},
        ": `database.url_query_defaults` must be a mapping",
    ),
    "the file is a list": (b"- database\n", {}, ": the file must be a mapping"),
    "the file is not UTF-8": (
        b"database:\n  application_name: caf\xe9\n",
        {},
        " is not UTF-8 text: save it as UTF-8",
    ),
    "DATABASE_URL is not UTF-8": (
        None,
        {"DATABASE_URL": os.fsdecode(b"postgresql://u\xff:p@127.0.0.1:1/db")},
        "DATABASE_URL holds a byte that is not UTF-8 text",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.parametrize("command", [(), ("check",), ("check", "--json")], ids=" ".join)
def test_malformed_settings_are_one_line_not_a_traceback(
    case: str, command: tuple[str, ...], tmp_path: Path
) -> None:
    contents, variables, said = MALFORMED[case]
    env = environment(**variables)
    if contents is not None:
        own = tmp_path / "service.yml"
        own.write_bytes(contents)
        env["BACKEND_CONFIG"] = str(own)
        said = f"BACKEND_CONFIG / config_file {own}{said}"
    result = run(sys.executable, "-m", "backend", *command, env=env)
    assert result.returncode == 3, result.stderr
    if command[-1:] == ("--json",):
        document = json.loads(result.stdout)
        assert document["exit_code"] == 3
        assert document["steps"][0]["detail"].startswith(said)
        assert "Traceback" not in result.stderr
    else:
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"python -m backend: {said}")


@pytest.mark.parametrize(
    ("variable", "value", "sentence"),
    [
        ("PORT", "eighty", "PORT must be a port number from 1 to 65535, got 'eighty'"),
        (
            "WEB_CONCURRENCY",
            "many",
            "WEB_CONCURRENCY must be a number of worker processes >= 1, got 'many'",
        ),
    ],
)
def test_a_bad_port_or_worker_count_is_one_line(variable: str, value: str, sentence: str) -> None:
    result = run(sys.executable, "-m", "backend", env=environment(**{variable: value}))
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr.splitlines() == [f"python -m backend: {sentence}"]


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/db", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("how", ["--workers", "WEB_CONCURRENCY"])
def test_workers_reach_uvicorn(database_url: URL, how: str) -> None:
    port = free_port()
    url = with_run_driver(database_url).render_as_string(hide_password=False)
    env = environment(DATABASE_URL=url, DATABASE_ASYNC_DRIVER=async_driver())
    options = ["--workers", "2"] if how == "--workers" else []
    if how == "WEB_CONCURRENCY":
        env["WEB_CONCURRENCY"] = "2"
    log = Path(tempfile.mkstemp(prefix="backend-workers-")[1])
    with log.open("w") as output:
        job = subprocess.Popen(
            [sys.executable, "-m", "backend", "--port", str(port), *options],
            cwd=project_root(), env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and job.poll() is None:
            if log.read_text().count("Application startup complete.") == 2 and answers(port):
                break
            time.sleep(0.1)
        job.send_signal(2)  # Ctrl-C: the parent stops its workers
        assert job.wait(30) == 0
    finally:
        job.kill()
        output_text = log.read_text()
        log.unlink()
    assert "Started parent process" in output_text, output_text
    assert output_text.count("Application startup complete.") == 2, output_text
    # The startup line, once per worker: which database (password hidden), direct, TLS, pools.
    url = f"postgresql+{run_driver()}://postgres:***@127.0.0.1:{database_url.port}/"
    assert output_text.count(f"backend: database {url}") == 2, output_text
    where = f"direct, async engine on {async_driver()}, sslmode=verify-full, pool 5 + 5 overflow"
    assert where in output_text
    assert output_text.count("Finished server process") == 2
    assert "Traceback" not in output_text


def test_plain_uvicorn_logs_the_startup_line(database_url: URL) -> None:
    """Under `uvicorn backend.main:app`, which configures only its own loggers."""
    port = free_port()
    env = environment(DATABASE_URL=database_url.render_as_string(hide_password=False))
    log = Path(tempfile.mkstemp(prefix="backend-uvicorn-")[1])
    with log.open("w") as output:
        job = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(port)],
            cwd=project_root(), env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and job.poll() is None:
            if "Application startup complete." in log.read_text() and answers(port):
                break
            time.sleep(0.1)
        job.send_signal(2)
        job.wait(30)
    finally:
        job.kill()
        output_text = log.read_text()
        log.unlink()
    startup = f"INFO:     backend: database postgresql+psycopg2://postgres:***@127.0.0.1:{database_url.port}/"
    assert output_text.count(startup) == 1, output_text
    assert str(database_url.password) not in output_text
