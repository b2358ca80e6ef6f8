"""Clear what a test run leaves when its process is killed outright: PgBouncer, temp folders.

Started by backend.testing.postgres.run_test_server() as

    python -I leftovers_watch.py

with its stdin the read end of a pipe only the starting process holds, which tells it, a line
at a time, what to clear should that process die first:

    kill PID MARKER     a process to end (PgBouncer), if its command line still holds MARKER
    wait DATA_DIR       a PostgreSQL whose own watch (backend/embedded/watch.py) stops it:
                        wait for it to be gone before removing its folder
    remove FOLDER       a folder to remove
    stopped             the run ended normally and cleared everything itself

End of file without `stopped` (SIGKILL, a crash: the kernel closes the pipe) means the run
died: this does the clearing. Linux only for `kill` (it reads /proc to avoid ending a process
that reused the PID); elsewhere that line is ignored. The standard library only, run with -I.
"""

import os
import shutil
import signal
import sys
import time
from contextlib import suppress
from pathlib import Path

SERVER_STOP_WAIT = 60.0


def main() -> int:
    orders = [line.split(" ", 1) for line in sys.stdin.read().splitlines() if line]
    if orders and orders[-1] == ["stopped"]:
        return 0
    for verb, argument in orders:
        if verb == "kill":
            pid, marker = argument.split(" ", 1)
            _end(int(pid), marker)
    for verb, argument in orders:
        if verb == "wait":
            deadline = time.monotonic() + SERVER_STOP_WAIT
            pid_file = Path(argument) / "postmaster.pid"
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    for verb, argument in orders:
        if verb == "remove":
            shutil.rmtree(argument, ignore_errors=True)  # links are removed, never followed
    return 0


def _end(pid: int, marker: str) -> None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # gone already, or no /proc to tell whether it is still ours
    if marker.encode() in command:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
