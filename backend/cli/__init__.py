"""The commands of `python -m backend`, one module each (backend/__main__.py lists them).

A command module's docstring is its help; it has `add_arguments(parser)` and `run(args)`, which
returns the exit code or raises CommandError: one line on stderr, no traceback.
"""

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from backend.db.container import Container
from backend.embedded import UNPRIVILEGED_USER, reachable_data_dir
from backend.settings import ConfigurationError, DatabaseSettings

__all__ = [
    "BAD_SETTING",
    "Command",
    "CommandError",
    "add_data_dir",
    "checked_settings",
    "data_folder",
    "positive",
    "workers_from_environment",
]

# The exit code of a setting that is missing or invalid: one line names it, the rule, the fix.
BAD_SETTING = 3


class Command(Protocol):
    """What backend/__main__.py needs of a command module."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class CommandError(Exception):
    """A command that cannot go on: its message, said as one line, and its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BACKEND_PGDATA", ".pgdata")),
        help="the embedded server's folder, kept across runs (default: .pgdata, or BACKEND_PGDATA)",
    )


def data_folder(args: argparse.Namespace, say: Callable[[str], None]) -> Path:
    """The folder the embedded server of `--data-dir` really uses; `say` tells why if it moved."""
    # Absolute but not resolved: resolving would follow a `.pgdata` link (one the server's user
    # could have planted) and have root take over its target.
    requested = Path(os.path.abspath(args.data_dir))
    folder = reachable_data_dir(requested)
    if folder != requested:
        say(
            f"{requested.parent} is a folder PostgreSQL's user ({UNPRIVILEGED_USER}) cannot "
            f"enter: keeping the embedded server's data in {folder} instead"
        )
    return folder


def checked_settings(container: Container | None = None) -> DatabaseSettings:
    """The settings of `container` (by default the one the app makes from DATABASE_*,
    BACKEND_CONFIG and config.yml), with every engine's rules applied (its connection plan
    built), as the app's start does; a bad one is a CommandError: one line, exit code 3."""
    try:
        plan = (container or Container()).connection_plan()
    except ConfigurationError as error:
        raise CommandError(str(error), BAD_SETTING) from None
    return plan.settings


def workers_from_environment() -> int:
    """WEB_CONCURRENCY, as uvicorn and gunicorn read it, else 1."""
    value = os.environ.get("WEB_CONCURRENCY", "1")
    if not (value.isascii() and value.isdigit() and int(value) >= 1):
        raise CommandError(
            f"WEB_CONCURRENCY must be a number of worker processes >= 1, got {value!r}",
            BAD_SETTING,
        )
    return int(value)


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)
