"""One process at a time runs the embedded server of a folder, and no other stops it.

PostgresServer.start() takes an exclusive flock(2) on the server's folder and holds it until
stop(); its watch process (watch.py) inherits it. So the lock is free only when both
the process that started the server and its watch have ended, and then:

- a start that finds it held by a live process refuses (`Locked`): another instance runs the
  server, and stopping it would leave that instance answering 503;
- a start that finds it held by a process that has ended waits: the watch of a killed run
  holds it while it stops that run's server, and would otherwise stop ours;
- a start that takes it and finds a server running in the folder knows it is a stale one
  (its starter and its watch were both killed) and stops it.

Why the folder and not a lock file in it: as root, the folder is `nobody`'s
(files.py), and a lock file in it could be swapped by `nobody` for a link that has
root create, or open, whatever it points at. The folder itself is opened read-only without
following a link, and nothing is created or written for the lock. flock on a folder is
supported on Linux and the BSDs (macOS); PostgreSQL itself uses no flock there.

The lock says *that* an instance runs; `instance.pid` in the folder, written as the server's
user, says *which*, for messages. It is that user's file: its number is never signalled, only
asked whether it lives (signal 0).
"""

import fcntl
import os
import time
from pathlib import Path

from backend.embedded.files import read_as_owner, write_as_owner

__all__ = ["Locked", "held", "holder", "release", "take"]

PID_FILE = "instance.pid"
# pg_ctl's own default wait: how long a killed run's watch may take to stop its server.
WAIT_FOR_WATCH = 60.0


class Locked(Exception):
    """Another process, alive, holds the folder: `pid` (None if it did not say)."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(pid)
        self.pid = pid


def take(folder: Path, *, patience: float = WAIT_FOR_WATCH) -> int:
    """Lock `folder` for this process: an open descriptor to keep for as long as it runs the
    server (non-inheritable; pass it to a child that should hold it too), and `instance.pid`
    says so. Raises Locked if a live process holds it."""
    descriptor = _open(folder)
    try:
        deadline = time.monotonic() + patience
        while not _try(descriptor, fcntl.LOCK_EX):
            pid = holder(folder)
            if (pid is not None and _alive(pid)) or time.monotonic() > deadline:
                raise Locked(pid)
            # Its holder has ended (or is about to say who it is): a watch stopping a killed
            # run's server, or `held()` looking for a moment.
            time.sleep(0.1)
        write_as_owner(folder / PID_FILE, f"{os.getpid()}\n".encode())
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def release(descriptor: int) -> None:
    os.close(descriptor)  # the lock goes with the last descriptor of its open file


def held(folder: Path) -> bool:
    """Whether a process holds `folder`'s lock: an instance runs its server."""
    try:
        descriptor = _open(folder)
    except OSError:  # no folder (never started), or not one we would use
        return False
    try:
        return not _try(descriptor, fcntl.LOCK_SH)
    finally:
        os.close(descriptor)


def holder(folder: Path) -> int | None:
    """The process `instance.pid` names, if it names one."""
    content = read_as_owner(folder / PID_FILE)
    try:
        pid = int(content or b"")
    except ValueError:
        return None
    # 0 and negative numbers name process groups, or every process, to kill(2).
    return pid if pid > 0 else None


def _open(folder: Path) -> int:
    # Read-only and O_NOFOLLOW: as root, a link in the folder's place leads nowhere.
    return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def _try(descriptor: int, operation: int) -> bool:
    try:
        fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
