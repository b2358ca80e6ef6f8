"""print the embedded server's URL, for DATABASE_URL, SQLAlchemy, Alembic or psql, whether it
runs or not (the password is hidden unless --show-password)"""

import argparse
import sys

from backend.cli import CommandError, add_data_dir, data_folder
from backend.embedded import recorded_url, running_elsewhere
from backend.embedded.files import check_folder

# The scheme names the driver, so that SQLAlchemy (2.1 reads a bare postgresql:// as psycopg 3)
# and Alembic take the URL as it is; psql and other libpq tools want the plain scheme.
SCHEMES = {
    "psycopg2": "postgresql+psycopg2",
    "psycopg": "postgresql+psycopg",
    "asyncpg": "postgresql+asyncpg",
    "libpq": "postgresql",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--show-password", action="store_true", help="print the password instead of ***"
    )
    parser.add_argument(
        "--driver",
        choices=SCHEMES,
        default="psycopg2",
        help="the driver the URL's scheme names (default psycopg2; libpq: postgresql://, for psql)",
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
    url = url.set(drivername=SCHEMES[args.driver])
    print(url.render_as_string(hide_password=not args.show_password))
    pid = running_elsewhere(folder)
    if pid is None:
        say(f"not running: python -m backend --data-dir {args.data_dir} starts it at this URL")
    else:
        say(f"running, served by process {pid}" if pid else "running")
    return 0
