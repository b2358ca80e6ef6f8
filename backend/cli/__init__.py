"""The commands of `python -m backend`, one module each (backend/__main__.py lists them).

A command module's docstring is its help; it has `add_arguments(parser)` and `run(args)`, which
returns the exit code or raises CommandError: one line on stderr, no traceback.
"""

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from backend.embedded import UNPRIVILEGED_USER, reachable_data_dir

__all__ = ["Command", "CommandError", "add_data_dir", "data_folder"]


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
