"""Do what a process would have done at its end when it dies first, however it dies.

The one watch of the project, with one protocol. Started, never by hand, through `Watch` (at
the end of this file) by

- PostgresServer.start() (backend/embedded/server.py): stop the server it starts, and remove
  the private copy of the binaries that server runs from (files.private_copy);
- run_test_server() (backend/testing/postgres.py): end the test run's PgBouncer, wait for its
  server (which the server's own watch stops), and remove its temporary folders.

Each runs `python -I backend/embedded/watch.py LABEL` with its stdin the read end of a pipe
whose write end only the starting process (the owner) holds. LABEL, the folder the watch is
for, is there for ps and for the tests that look for what a run left: nothing reads it. The
owner writes one line per order as it comes, the verb then its arguments, each one
percent-encoded (a path may hold a space, even a newline):

    stop PG_CTL DATA_DIR UID GID   a PostgreSQL to stop (`pg_ctl stop -m fast`), as UID:GID
                                   unless UID is -1
    kill PID MARKER                a process to end (SIGTERM), if its command line still holds
                                   MARKER: PgBouncer, its folder's path
    wait DATA_DIR                  a PostgreSQL whose own watch stops it: wait for it to be
                                   gone (up to 60 s) before removing its folder
    remove PATH                    a folder to remove
    stopped                        the owner did everything itself: nothing to do

When the owner ends cleanly it writes `stopped` and closes the pipe. When it dies without
doing so (SIGKILL, a crash), the kernel closes the pipe for it, the read here ends without
`stopped`, and this does the orders in a safe order, whatever order they came in: processes
are ended first (a pooler is a server's client), then servers stopped, then waited for, and
folders removed last (a server runs from one, or keeps its data in one). A line the owner did
not finish writing (it died mid-write) is dropped: a path cut short could name another folder.

Why a pipe and not Linux's PR_SET_PDEATHSIG: pg_ctl daemonizes the postmaster, so the signal
would have to go to a watcher like this one anyway; it fires when the *thread* that started the
watcher ends, not the process (prctl(2)), it needs ctypes in a preexec_fn, which is unsafe in a
process with threads, and it is Linux only. End of file on a pipe comes on every POSIX system,
for every way a process can end. The write end is not inherited by the programs the process
runs (PEP 446); a child it forks without exec holds it too, and the server then lives until
that child ends as well, which is what such a child would want.

The server's watch also inherits, and holds until it ends, the descriptor that locks the
server's folder (lock.py): a new start then waits for it to finish stopping a killed run's
server instead of taking that server for stale while it is still being stopped, and never has
its own server stopped by a watch that was late.

As root (files.py), this runs as root and the server as `nobody`, who can change everything in
the server's folder. So nothing here opens, reads or follows a path in it: pg_ctl runs as the
server's user (its uid and gid, no supplementary groups), with no shell, in `/`, its stdin
/dev/null; `wait` tests for postmaster.pid without following a link; `remove` is
shutil.rmtree, which never follows a link (fd-based where the platform allows:
shutil.rmtree.avoids_symlink_attacks) and leaves a link given as PATH alone; `kill` signals
only a process whose command line it checked, through /proc (Linux only: elsewhere `kill` is
skipped, as a reused PID could not be told apart).

The standard library only, run with -I: nothing from the environment or the current folder,
nothing imported from `backend` (Watch is for the owner's side, and unused here).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

__all__ = ["Watch"]

SCRIPT = Path(__file__)
# pg_ctl's own default wait: how long another watch may take to stop its server.
SERVER_STOP_WAIT = 60.0
# Each verb, and how many arguments it takes.
VERBS = {"stop": 4, "kill": 2, "wait": 1, "remove": 1, "stopped": 0}
Order = tuple[str, list[str]]


def main() -> int:
    orders = read_orders(sys.stdin.buffer.read())
    if ("stopped", []) in orders:
        return 0  # the owner did everything itself and said so
    for verb, arguments in orders:
        if verb == "kill":
            end_process(int(arguments[0]), arguments[1])
    for verb, arguments in orders:
        if verb == "stop":
            stop_server(*arguments)
    for verb, arguments in orders:
        if verb == "wait":
            wait_for_server(arguments[0])
    for verb, arguments in orders:
        if verb == "remove":
            shutil.rmtree(arguments[0], ignore_errors=True)  # links removed, never followed
    return 0


def read_orders(received: bytes) -> list[Order]:
    """The complete, well-formed lines of `received`; the rest is said on stderr and dropped."""
    *lines, _unfinished = received.split(b"\n")
    orders = []
    for line in lines:
        verb, *words = line.decode("ascii", errors="replace").split(" ")
        arguments = [os.fsdecode(unquote_to_bytes(word)) for word in words]
        if VERBS.get(verb) == len(arguments) and _numbers_are_numbers(verb, arguments):
            orders.append((verb, arguments))
        else:
            print(f"backend: watch: ignoring {line!r}", file=sys.stderr, flush=True)
    return orders


def _numbers_are_numbers(verb: str, arguments: list[str]) -> bool:
    numbers = {"stop": arguments[2:], "kill": arguments[:1]}.get(verb, [])
    return all(number.lstrip("-").isdigit() for number in numbers)


def stop_server(pg_ctl: str, data_dir: str, uid: str, gid: str) -> None:
    owner: dict[str, Any] = (
        {} if int(uid) < 0 else {"user": int(uid), "group": int(gid), "extra_groups": []}
    )
    print(
        f"backend: the process that started PostgreSQL in {data_dir} ended without stopping it:"
        " stopping it",
        file=sys.stderr,
        flush=True,
    )
    with suppress(OSError):  # pg_ctl gone: nothing to run, the other orders still are
        subprocess.run(
            [pg_ctl, "-D", data_dir, "-m", "fast", "-w", "stop"],
            stdin=subprocess.DEVNULL,
            cwd="/",
            check=False,
            **owner,
        )


def wait_for_server(data_dir: str) -> None:
    deadline = time.monotonic() + SERVER_STOP_WAIT
    pid_file = os.path.join(data_dir, "postmaster.pid")
    while os.path.lexists(pid_file) and time.monotonic() < deadline:  # a link is not followed
        time.sleep(0.1)


def end_process(pid: int, marker: str) -> None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # gone already, or no /proc to tell whether it is still ours
    if os.fsencode(marker) in command:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


class Watch:
    """The owner's side: starts a watch, tells it each order as it comes (`order`), and says
    `stopped` when the owner has done everything itself (`stopped`, which waits for it to end).

    `label` names the folder it is for on its command line; `pass_fds` it inherits and holds
    until it ends (the server's lock)."""

    def __init__(self, label: str | os.PathLike[str], pass_fds: Sequence[int] = ()) -> None:
        read_end, self._pipe = os.pipe()  # the write end is not inherited (PEP 446)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", str(SCRIPT), os.fspath(label)],
                stdin=read_end,
                cwd="/",
                start_new_session=True,  # Ctrl-C in a terminal is for the owner, not for it
                pass_fds=tuple(pass_fds),
            )
        except BaseException:
            os.close(self._pipe)
            raise
        finally:
            os.close(read_end)

    def order(self, verb: str, *arguments: str | int | os.PathLike[str]) -> None:
        """Have `verb` done with `arguments` should the owner die (see the table above)."""
        assert VERBS[verb] == len(arguments), f"{verb} takes {VERBS[verb]} arguments"
        words = [quote_from_bytes(_as_bytes(each), safe="/") for each in arguments]
        self._write(" ".join([verb, *words]).encode() + b"\n")

    def stopped(self) -> None:
        """Say the owner did everything itself, and let the watch end."""
        with suppress(BrokenPipeError):  # someone else ended it
            self._write(b"stopped\n")
        os.close(self._pipe)
        self.process.wait()

    def _write(self, line: bytes) -> None:
        rest = memoryview(line)
        while rest:  # a long line may go in several writes
            rest = rest[os.write(self._pipe, rest) :]


def _as_bytes(argument: str | int | os.PathLike[str]) -> bytes:
    return os.fsencode(str(argument) if isinstance(argument, int) else argument)


if __name__ == "__main__":
    sys.exit(main())
