"""check this service's database step by step: the settings against Neon's rules, DNS, TCP,
TLS, authentication, the server, a pooler, round trips, the connection budget, and the server
settings that matter (exit code 0: nothing failed; 1: a check failed; 3: a setting is invalid)

Each line says ✔ (passed), ⚠ (works, but read the fix) or ✘ (failed) and, for ⚠ and ✘, the
setting to change. It never shows the password and never writes to the database."""

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace

from dependency_injector import providers

from backend.cli import BAD_SETTING, CommandError, positive, workers_from_environment
from backend.db.connection.plan import ConnectionPlan
from backend.db.container import Container
from backend.doctor import Options, Report, Step, check_direct, run_checks
from backend.doctor.budget import ENGINES
from backend.doctor.report import as_line
from backend.settings import ConfigurationError, NoDirectEndpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document, for machines")
    parser.add_argument(
        "--workers",
        type=positive,
        help="worker processes per instance, each with its own pools (default: "
        "WEB_CONCURRENCY, else 1)",
    )
    parser.add_argument(
        "--engines",
        type=engines,
        default=tuple(ENGINES),
        help="the engines each worker builds, by name (comma-separated: "
        f"{','.join(ENGINES)}; the default: all four, the most the app can open), or a "
        "count, each then counted at the larger of the write and read pools",
    )
    parser.add_argument(
        "--pings", type=positive, default=20, help="round trips to time (default: 20)"
    )


def engines(text: str) -> tuple[str, ...] | int:
    if text.isascii() and text.isdigit():
        return positive(text)
    names = tuple(name.strip() for name in text.split(","))
    if unknown := [name for name in names if name not in ENGINES]:
        raise argparse.ArgumentTypeError(
            f"unknown engine {unknown[0]!r}: name some of {', '.join(ENGINES)}, or give a count"
        )
    return names


def run(args: argparse.Namespace) -> int:
    options = Options(
        workers=args.workers or workers_from_environment(),
        engines=args.engines,
        pings=args.pings,
    )

    def show(step: Step) -> None:
        if not args.json:
            print(as_line(step), flush=True)

    try:
        container = Container()
        report = run_checks(container, options, show)
        replicas = [
            _check_replica(plan, number, options, show, args.json)
            for number, plan in enumerate(container.replica_plans(), 1)
        ]
        direct = _check_direct(container, show, args.json)
    except ConfigurationError as error:
        if not args.json:
            raise CommandError(str(error), BAD_SETTING) from None
        report = Report()
        report.add(Step("settings", "fail", str(error)))
        print(json.dumps({**report.as_json(), "exit_code": BAD_SETTING}))
        return BAD_SETTING
    others = [*replicas, *([direct] if direct else [])]
    code = max([report.exit_code, *(other.exit_code for other in others)])
    if args.json:
        document = report.as_json()
        if replicas:
            document["replicas"] = [replica.as_json() for replica in replicas]
        if direct:
            document["direct"] = direct.as_json()
        document |= {"ok": code == 0, "exit_code": code}
        json.dump(document, sys.stdout)
        print()
    else:
        if not others:
            print(report.summary())
        else:
            print(f"primary: {report.summary()}")
            for number, replica in enumerate(replicas, 1):
                print(f"replica {number}: {replica.summary()}")
            if direct:
                print(f"direct endpoint: {direct.summary()}")
    return code


def _check_direct(container: Container, show: Callable[[Step], None], quiet: bool) -> Report | None:
    """The direct endpoint (migrations), where one is known and it is not DATABASE_URL's own
    host; checked through the container's direct engine."""
    try:
        plan = container.direct_plan()
    except NoDirectEndpoint:
        return None  # the app serves without one; only its migrations need it
    if plan is container.connection_plan():
        return None
    if not quiet:
        url = plan.settings.url.render_as_string(hide_password=True)
        print(f"\ndirect endpoint: {url}", flush=True)
    return check_direct(container, show)


def _check_replica(
    plan: ConnectionPlan, number: int, options: Options, show: Callable[[Step], None],
    quiet: bool,
) -> Report:  # fmt: skip
    """Each DATABASE_READ_URL replica, checked like the primary through a container of its own
    plan (the one the app's replica engines are built from); its budget is its own
    max_connections against the read engines each worker opens there."""
    if not quiet:
        url = plan.settings.url.render_as_string(hide_password=True)
        print(f"\nreplica {number}: {url}", flush=True)
    container = Container()
    container.settings.override(providers.Object(plan.settings))
    container.connection_plan.override(providers.Object(plan))
    read_engines = ("read_engine", "async_read_engine")
    return run_checks(container, replace(options, engines=read_engines), show)
