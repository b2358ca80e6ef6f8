"""`python -m backend`: serve the app on DATABASE_URL, or on an embedded PostgreSQL without it."""

import argparse
import os
import signal
import sys
from contextlib import ExitStack, suppress
from pathlib import Path
from time import perf_counter
from types import FrameType

import uvicorn

from backend.embedded import (
    UNPRIVILEGED_USER,
    PostgresServer,
    embedded_bindir,
    reachable_data_dir,
    running,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    port = os.environ.get("PORT", "8000")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        sys.exit(f"python -m backend: PORT must be a port number from 1 to 65535, got {port!r}")
    parser.add_argument("--port", type=int, default=int(port))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BACKEND_PGDATA", ".pgdata")),
        help="the embedded server's folder, kept across runs (default: .pgdata, or BACKEND_PGDATA)",
    )
    args = parser.parse_args(argv)
    # `kill <pid>` (SIGTERM: systemd, docker stop) stops like Ctrl-C does. uvicorn handles both
    # while it serves, shuts the app down, puts our handler back and raises the signal again;
    # with Python's default for SIGTERM, that killed us there, and the ExitStack never stopped
    # the embedded server.
    signal.signal(signal.SIGTERM, _interrupt)

    # KeyboardInterrupt: Ctrl-C or SIGTERM. uvicorn re-raises it after its clean shutdown;
    # during startup it comes straight here. Either way the ExitStack has stopped the server.
    with suppress(KeyboardInterrupt), ExitStack() as stack:
        if os.environ.get("DATABASE_URL"):
            print("Using DATABASE_URL", flush=True)
        else:
            # Absolute but not resolved: resolving would follow a `.pgdata` link (one the
            # server's user could have planted) and have root take over its target.
            requested = Path(os.path.abspath(args.data_dir))
            data_dir = reachable_data_dir(requested)
            if data_dir != requested:
                print(
                    f"{requested.parent} is a folder PostgreSQL's user ({UNPRIVILEGED_USER}) "
                    f"cannot enter: keeping the embedded server's data in {data_dir} instead",
                    flush=True,
                )
            server = PostgresServer(embedded_bindir(), data_dir)
            started = perf_counter()
            try:
                stack.enter_context(running(server))
            except RuntimeError as error:  # a refused folder, a failed initdb: said plainly
                parser.exit(1, f"{parser.prog}: {error}\n")
            # The URL's repr hides the password; the app reads the full one from the environment.
            print(
                f"Embedded PostgreSQL {server.version()} started in "
                f"{perf_counter() - started:.2f} s at {server.url()!r} (data in {server.root})",
                flush=True,
            )
            os.environ["DATABASE_URL"] = server.url().render_as_string(hide_password=False)
        # uvicorn handles Ctrl-C by shutting the app down and returning; the ExitStack then
        # stops the embedded server (pg_ctl starts it in its own session, so Ctrl-C spares it).
        uvicorn.run("backend.main:app", host=args.host, port=args.port)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
