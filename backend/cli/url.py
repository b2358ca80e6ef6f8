"""print the embedded server's URL, for DATABASE_URL, SQLAlchemy, Alembic or psql, whether it
runs or not; with --direct, the direct endpoint (migrations, pg_dump, psql): with DATABASE_URL
set (or in .env), the one its settings give (DATABASE_DIRECT_URL, DATABASE_URL_UNPOOLED, or
derived from a Neon -pooler host), else the embedded server's, which has no pooler (the
password is hidden unless --show-password)"""

import argparse
import os
import sys

from sqlalchemy.engine import URL

from backend.cli import BAD_SETTING, CommandError, add_data_dir, data_folder
from backend.db.container import Container
from backend.embedded import recorded_url, running_elsewhere
from backend.embedded.files import check_folder
from backend.settings import ConfigurationError, with_env_file

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
    parser.add_argument(
        "--direct",
        action="store_true",
        help="the direct endpoint, never a pooler: with DATABASE_URL set, the one its settings "
        "give (DATABASE_DIRECT_URL, DATABASE_URL_UNPOOLED, or the -pooler host without -pooler), "
        "with its TLS parameters; else the embedded server's URL",
    )
    add_data_dir(parser)


def run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr)  # stdout is the URL alone: $(python -m backend url)

    if args.direct and _names_a_database():
        direct = _direct_url(args.driver)
        print(direct.render_as_string(hide_password=not args.show_password))
        return 0

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


def _names_a_database() -> bool:
    """Whether DATABASE_URL is set, in the environment or the .env the settings read."""
    try:
        return bool(with_env_file(os.environ).get("DATABASE_URL"))
    except ConfigurationError as error:
        raise CommandError(str(error), BAD_SETTING) from None


def _direct_url(driver: str) -> URL:
    """The direct endpoint's URL as libpq's drivers get it: host, port, sslmode and the TLS
    files explicit (secret parameters such as sslpassword stay out, as in every shown URL)."""
    if driver == "asyncpg":
        raise CommandError(
            "--direct --driver asyncpg: asyncpg takes TLS as a connect argument, which no URL "
            "carries; use --driver psycopg2, psycopg or libpq",
            BAD_SETTING,
        )
    try:
        plan = Container().direct_plan()
    except ConfigurationError as error:
        raise CommandError(str(error), BAD_SETTING) from None
    return plan.sync_driver.url.set(drivername=SCHEMES[driver])
