"""`python -m backend [COMMAND]`: `serve` (the default) serves an app on DATABASE_URL, or on an
embedded PostgreSQL without it; `check` checks the database settings and the server, step by
step; `url` prints the embedded server's URL."""

import argparse
import sys
from collections.abc import Sequence

from backend.cli import Command, CommandError, check, serve, url

# A new command: a module in backend/cli/ (see its __init__), and a line here.
COMMANDS: dict[str, Command] = {"serve": serve, "check": check, "url": url}
DEFAULT = "serve"  # `python -m backend --port 8000` is `python -m backend serve --port 8000`


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m backend", description=__doc__, epilog=f"Without a command: {DEFAULT}."
    )
    commands = main.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        doc = (command.__doc__ or "").strip()
        sub = commands.add_parser(name, help=doc.split("\n\n")[0], description=doc)
        command.add_arguments(sub)
        sub.set_defaults(command=command)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in {*COMMANDS, "-h", "--help"}:
        arguments.insert(0, DEFAULT)
    cli = parser()
    args = cli.parse_args(arguments)
    try:
        code: int = args.command.run(args)
    except CommandError as error:
        print(f"{cli.prog}: {error}", file=sys.stderr)
        return error.code
    return code


if __name__ == "__main__":
    sys.exit(main())
