"""`python -m backend check`: is this service's database reachable, safe and big enough?

The steps, each shown as it ends: the settings against Neon's rules (the layer's own rules,
backend.settings and the connection plan of backend.db.connection, built as the app builds it),
then for each host DNS, TCP and TLS, then, through the app's own engines, authentication, the async
path, the server's version, whether a pooler is in between, the round-trip time, the
connection budget against the server's slots, and the server settings that matter on Neon.
It never shows the password and never writes: its connection runs SELECT and SHOW only, in
autocommit.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db.connection.plan import DERIVED, ConnectionPlan
from backend.db.container import Container
from backend.doctor import network, server, server_settings
from backend.doctor.budget import ENGINES, connection_budget
from backend.doctor.report import Report, Step, timed
from backend.settings import MissingDriver

__all__ = ["Options", "Report", "Step", "check_direct", "run_checks"]

SERVER_STEPS = [
    "authentication",
    "async path",
    "server",
    "pooler",
    "round trip",
    "connections",
    "statement_timeout",
    "idle_in_transaction",
]


@dataclass(frozen=True)
class Options:
    workers: int = 1
    engines: tuple[str, ...] | int = tuple(ENGINES)
    pings: int = 20


def run_checks(
    container: Container, options: Options, show: Callable[[Step], None] = lambda step: None
) -> Report:
    """Run every step; a ConfigurationError (a setting the app would refuse) propagates."""
    report = Report(show)
    if container.engine.overridden:
        return _check_given_engine(report, container.engine(), options)
    (plan, engine, async_engine, said), ms = timed(partial(_built, container))
    report.add(_settings_step(plan, said), ms)
    if (connection := _signed_in(report, plan, engine, SERVER_STEPS)) is None:
        return report
    with connection:
        _server_steps(report, connection, engine, async_engine, plan, options)
    engine.dispose()
    return report


DIRECT_STEPS = ["authentication", "server", "pooler"]


def check_direct(container: Container, show: Callable[[Step], None] = lambda step: None) -> Report:
    """The direct endpoint (migrations, advisory locks, LISTEN), where it is not DATABASE_URL's
    own host: DNS, TCP and TLS, authentication through the direct engine, the server, and that
    no pooler answers there. A setting it refuses (NoDirectEndpoint included) propagates."""
    report = Report(show)
    plan = container.direct_plan()
    url = plan.settings.url.render_as_string(hide_password=True)
    report.add(Step("settings", "pass", f"{url}: {plan.came_from}, sslmode={plan.sslmode}"))
    engine = container.direct_engine()
    if (connection := _signed_in(report, plan, engine, DIRECT_STEPS)) is None:
        return report
    with connection:
        report.add(*timed(partial(server.server_version, connection)))
    found, ms = timed(partial(server.detect_pooler, engine, plan))
    if found.kind in ("pgbouncer", "ignores"):
        step = Step(
            "pooler",
            "fail",
            f"a pooler: {found.evidence}; migrations, advisory locks and LISTEN break there",
            fix=f"give the server's own URL in {_direct_variable(plan)}",
        )
    elif found.kind == "none":
        step = Step("pooler", "pass", f"direct: {found.evidence}")
    else:
        step = Step("pooler", "warn", f"could not tell: {found.evidence}")
    report.add(step, ms)
    return report


def _direct_variable(plan: ConnectionPlan) -> str:
    return "DATABASE_DIRECT_URL" if plan.source == DERIVED else plan.source


def _signed_in(
    report: Report, plan: ConnectionPlan, engine: Engine, later: list[str]
) -> Connection | None:
    """DNS, TCP and TLS for each host, then authentication through `engine`: its connection,
    or None, the `later` steps (authentication first) skipped with the reason."""
    if not _reachable(report, plan):
        report.skip(later, "no host takes connections")
        return None
    (step, connection), ms = timed(partial(server.authenticate, engine))
    report.add(step, ms)
    if connection is None:
        report.skip(later[1:], "the server did not let us in")
    return connection


def _reachable(report: Report, plan: ConnectionPlan) -> bool:
    """DNS, TCP and TLS for each host of the plan: whether any takes connections."""
    settings, target = plan.settings, plan.target
    reachable = False
    listed = len(target.endpoints) > 1

    def add(step: Step, ms: float) -> Step:
        if listed:
            # libpq tries a host list in turn: one host that fails is a warning, and a
            # failure only if none takes connections (said once, below).
            step.detail = f"{step.facts.get('host') or 'this host'}: {step.detail}"
            step.status = "warn" if step.status == "fail" else step.status
        return report.add(step, ms)

    for endpoint in target.endpoints:
        (step, addresses), ms = timed(partial(network.dns, endpoint, plan.origin("host")))
        step.facts.setdefault("host", endpoint.host or endpoint.address)
        if add(step, ms).status != "pass":
            continue
        (step, address), ms = timed(
            partial(network.tcp, endpoint, addresses, settings.connect_timeout)
        )
        step.facts.setdefault("host", endpoint.host or endpoint.address)
        add(step, ms)
        if address is None:
            continue
        step, ms = timed(partial(network.tls, plan, endpoint, address, settings.connect_timeout))
        step.facts.setdefault("host", endpoint.host or endpoint.address)
        add(step, ms)
        reachable = True
    if not reachable and listed:
        report.add(
            Step(
                "hosts",
                "fail",
                f"none of the {len(target.endpoints)} hosts takes connections",
                fix="see the warnings above, host by host",
            )
        )
    return reachable


def _server_steps(
    report: Report,
    connection: Connection,
    engine: Engine,
    async_engine: AsyncEngine | None,
    plan: ConnectionPlan,
    options: Options,
) -> None:
    settings = plan.settings
    user = str(engine.url.username)
    budget = connection_budget(settings, options.workers, options.engines)
    values: dict[str, str] = {}
    found: list[str] = []

    def pooler() -> Step:
        step = server.pooler(engine, plan)
        found.append(step.facts.get("detected", "unknown"))
        return step

    def read_settings() -> Step:
        values.update(server_settings.read(connection))
        # Behind a pooler the budget is of client connections, whatever the layer believes.
        detected = found[-1] if found else "unknown"
        pooled = {"pgbouncer": True, "ignores": True, "none": False}.get(detected)
        return server_settings.connections(
            values, budget, plan.is_pooler if pooled is None else pooled
        )

    steps: list[tuple[str, Callable[[], Step]]] = [
        ("async path", partial(server.async_path, async_engine)),
        ("server", partial(server.server_version, connection)),
        ("pooler", pooler),
        ("round trip", partial(server.round_trip, connection, options.pings)),
        ("connections", read_settings),
        ("statement_timeout", lambda: server_settings.statement_timeout(values, settings, user)),
        ("idle_in_transaction", lambda: server_settings.idle_in_transaction(values, user)),
    ]
    for i, (name, work) in enumerate(steps):
        try:
            report.add(*timed(work))
        except (SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
            report.add(server.failure(name, exc))
            if connection.invalidated or connection.closed:
                report.skip([later for later, _ in steps[i + 1 :]], "the connection was lost")
                return


def _check_given_engine(report: Report, engine: Engine, options: Options) -> Report:
    """The steps that apply to an engine the app gave the container: its URL, TLS and pool
    are its own, not the settings', so only what it reaches is checked."""
    report.skip(["settings", "dns", "tcp", "tls"], "an engine was given to the container")
    (step, connection), ms = timed(partial(server.authenticate, engine))
    report.add(step, ms)
    if connection is None:
        report.skip(["server", "round trip"], "the server did not let us in")
        return report
    with connection:
        report.add(*timed(partial(server.server_version, connection)))
        report.add(*timed(partial(server.round_trip, connection, options.pings)))
    return report


def _built(container: Container) -> tuple[ConnectionPlan, Engine, AsyncEngine | None, list[str]]:
    """The connection plan and the two write engines, as the app builds them (no connection
    yet), with the warnings building them logs."""
    plan = container.connection_plan()
    with _captured("backend") as said:
        engine = container.engine()
        try:
            async_engine: AsyncEngine | None = container.async_engine()
        except MissingDriver:
            async_engine = None  # a sync-only install: its async path is skipped, not failed
    return plan, engine, async_engine, said


def _settings_step(plan: ConnectionPlan, said: list[str]) -> Step:
    settings, pooled, sslmode = plan.settings, plan.is_pooler, plan.sslmode
    url = settings.url.render_as_string(hide_password=True)
    if settings.pooler == "auto":
        why = "the host ends in -pooler" if pooled else "no host ends in -pooler"
    else:
        why = f"DATABASE_POOLER={settings.pooler}"
    how = f"sslmode={sslmode}" + ("" if settings.sslmode else " (the default for this host)")
    binding = settings.url.query.get("channel_binding", "prefer (libpq's default)")
    detail = (
        f"{url}: {'pooler' if pooled else 'direct'} ({why}), {how}, channel_binding={binding}; "
        f"drivers {plan.sync_driver_name} (sync) and {plan.async_driver_name} (async)"
    )
    facts: dict[str, Any] = {
        "url": url,
        "pooler": pooled,
        "sslmode": sslmode,
        "channel_binding": binding,
        "warnings": said,
    }
    if said:
        return Step("settings", "warn", f"{detail}; {'; '.join(said)}", facts=facts)
    return Step("settings", "pass", detail, facts=facts)


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextmanager
def _captured(name: str) -> Iterator[list[str]]:
    """What the `name` logger's tree warns meanwhile, kept here instead of printed."""
    logger = logging.getLogger(name)
    said: list[str] = []
    handler, propagate = _Collect(said), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
