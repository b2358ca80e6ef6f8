"""print the embedded server's URL, for psql, Alembic or DATABASE_URL, whether it runs or not
(the password is hidden unless --show-password)"""

import argparse
import sys

from backend.cli import CommandError, add_data_dir, data_folder
from backend.embedded import recorded_url, running_elsewhere
from backend.embedded.files import check_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--show-password", action="store_true", help="print the password instead of ***"
    )
    add_data_dir(parser)


def run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr)  # stdout is the URL alone: $(python -m backend url)

    folder = data_folder(args, say)
    try:
        check_folder(folder)  # the server's own rules: no URL from a folder it would refuse
    except RuntimeError as error:
        raise CommandError(str(error)) from None
    url = recorded_url(folder)
    if url is None:
        raise CommandError(
            f"no embedded PostgreSQL has started in {folder} yet: "
            f"python -m backend --data-dir {args.data_dir} starts one"
        )
    print(url.render_as_string(hide_password=not args.show_password))
    pid = running_elsewhere(folder)
    if pid is None:
        say(f"not running: python -m backend --data-dir {args.data_dir} starts it at this URL")
    else:
        say(f"running, served by process {pid}" if pid else "running")
    return 0
