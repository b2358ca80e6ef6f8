"""Nothing left behind: no server process and no data folder after a run, however it ends."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugin.shop import run, write_shop

pytest_plugins = ["pytester"]

USES_EVERYTHING = """
import os
import time
from pathlib import Path


def test_one(backend_client, backend_transactional_db, backend_neon):
    assert backend_client.post("/async/items", params={{"name": "tea"}}).status_code == 201
    {ending}
"""


@pytest.fixture
def temp_folder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary folder of the run's own (TMPDIR), to see what it leaves there."""
    folder = Path(tempfile.mkdtemp(prefix="backend-plugin-test-"))
    folder.chmod(0o755)  # as root, the server's user must pass through it, as through /tmp
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setenv("BACKEND_TEST_TMPDIR", str(folder))  # the server too, not in /dev/shm
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def shop(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    write_shop(pytester)


def processes_using(folder: Path) -> list[str]:
    """Command lines of the processes that name `folder` (the server, the watch, pgbouncer)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in command:
            found.append(command)
    return found


def assert_nothing_left(folder: Path) -> None:
    assert sorted(path.name for path in folder.iterdir()) == []
    assert processes_using(folder) == []


@pytest.mark.parametrize("ending", ["pass", "assert False"])
def test_a_run_that_passes_or_fails_leaves_nothing(
    pytester: pytest.Pytester, temp_folder: Path, ending: str
) -> None:
    pytester.makepyfile(test_everything=USES_EVERYTHING.format(ending=ending))
    result = run(pytester)
    result.assert_outcomes(**({"passed": 1} if ending == "pass" else {"failed": 1}))
    assert_nothing_left(temp_folder)


def start_and_wait_mid_test(pytester: pytest.Pytester) -> "subprocess.Popen[bytes]":
    """A user's run, started as from a terminal, once its test is running."""
    started = pytester.path / "started"
    ending = f"Path({str(started)!r}).touch(); time.sleep(120)"
    pytester.makepyfile(test_everything=USES_EVERYTHING.format(ending=ending))
    # Ctrl-C raises KeyboardInterrupt as in a terminal, even where this run was started with
    # SIGINT ignored (a shell's background job), which Python would otherwise pass on.
    arguments = ["-p", "no:cacheprovider", f"--basetemp={pytester.path / 'basetemp'}"]
    as_from_a_terminal = (
        "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"sys.exit(pytest.main({arguments!r}))"
    )
    run = subprocess.Popen(
        [sys.executable, "-c", as_from_a_terminal],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal gives it
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not started.exists():
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"the test did not start: {run.communicate()[0].decode()}")
        time.sleep(0.1)
    return run


def test_a_run_interrupted_mid_test_leaves_nothing(
    pytester: pytest.Pytester, temp_folder: Path
) -> None:
    run = start_and_wait_mid_test(pytester)
    try:
        assert processes_using(temp_folder) != []  # the server runs from there
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C: SIGINT to the whole process group
        output = run.communicate(timeout=120)[0].decode()
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    assert_nothing_left(temp_folder)


def test_a_run_killed_mid_test_leaves_nothing_once_its_watches_are_done(
    pytester: pytest.Pytester, temp_folder: Path
) -> None:
    run = start_and_wait_mid_test(pytester)
    try:
        os.kill(run.pid, signal.SIGKILL)  # pytest alone (an OOM kill): no teardown at all
    finally:
        run.communicate(timeout=60)
    # The watches act when the pipe from the dead run closes; they need a moment.
    deadline = time.monotonic() + 60
    while (processes_using(temp_folder) or any(temp_folder.iterdir())) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert_nothing_left(temp_folder)


def test_reuse_db_keeps_the_servers_data_and_no_process(
    pytester: pytest.Pytester, temp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(pytester.path / "cache"))
    pytester.makepyfile(
        test_items="""
        def test_items(backend_client):
            assert backend_client.post("/items", params={"name": "tea"}).status_code == 201
        """
    )
    first = run(pytester, "--backend-reuse-db")
    first.assert_outcomes(passed=1)
    header = [line for line in first.outlines if line.startswith("backend: server data")]
    kept = Path(header[0].split(" kept in ")[1].split(" (")[0])
    try:
        assert (kept / "data" / "PG_VERSION").exists()
        assert processes_using(kept) == []
        second = run(pytester, "--backend-reuse-db")
        second.assert_outcomes(passed=1)
        assert header[0] in second.outlines  # the same folder, started again
        assert processes_using(kept) == []
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    assert_nothing_left(temp_folder)
