"""Stop an embedded PostgreSQL when the process that started it dies, however it dies.

Started by PostgresServer.start() (backend/embedded/server.py), never by hand, as

    python -I backend/embedded/watch.py PG_CTL DATA_DIR UID GID [FOLDER_TO_REMOVE]

with its stdin the read end of a pipe whose write end only the starting process holds. When
that process stops the server itself, it writes a line and closes the pipe: nothing to do.
When it dies without doing so (SIGKILL, a crash), the kernel closes the pipe for it, the read
here ends empty, and this stops the server (`pg_ctl stop -m fast`, as UID:GID unless UID is
-1) and removes FOLDER_TO_REMOVE (a private copy of the server's binaries).

Why a pipe and not Linux's PR_SET_PDEATHSIG: pg_ctl daemonizes the postmaster, so the signal
would have to go to a watcher like this one anyway; it fires when the *thread* that started the
watcher ends, not the process (prctl(2)), it needs ctypes in a preexec_fn, which is unsafe in a
process with threads, and it is Linux only. End of file on a pipe comes on every POSIX system,
for every way a process can end. The write end is not inherited by the programs the process
runs (PEP 446); a child it forks without exec holds it too, and the server then lives until
that child ends as well, which is what such a child would want.

It also inherits, and holds until it ends, the descriptor that locks the server's folder
(lock.py): a new start then waits for it to finish stopping a killed run's server
instead of taking that server for stale while it is still being stopped, and never has its
own server stopped by a watch that was late.

The standard library only, run with -I: nothing from the environment or the current folder.
"""

import shutil
import subprocess
import sys
from typing import Any


def main(argv: list[str]) -> int:
    pg_ctl, data_dir, uid, gid, *remove = argv
    if sys.stdin.buffer.read():
        return 0  # the starting process stopped the server and said so
    owner: dict[str, Any] = (
        {} if int(uid) < 0 else {"user": int(uid), "group": int(gid), "extra_groups": []}
    )
    print(
        f"backend: the process that started PostgreSQL in {data_dir} ended without stopping it:"
        " stopping it",
        file=sys.stderr,
        flush=True,
    )
    subprocess.run(
        [pg_ctl, "-D", data_dir, "-m", "fast", "-w", "stop"],
        stdin=subprocess.DEVNULL,
        cwd="/",
        check=False,
        **owner,
    )
    for folder in remove:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
