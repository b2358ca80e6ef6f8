"""What each driver's connect() is called with, captured before any connection is made."""

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine


class Captured(Exception):
    pass


def _capture(engine: Engine, seen: dict[str, Any]) -> None:
    """Every connect of the engine (its retries included) ends in dialect.connect(), which calls
    the driver: that is replaced, on this engine's dialect only, by a recorder."""

    def record(*cargs: Any, **cparams: Any) -> Any:
        assert not cargs
        seen.update(cparams)
        raise Captured

    engine.dialect.connect = record  # type: ignore[method-assign]


def psycopg2_arguments(engine: Engine) -> dict[str, Any]:
    """The keywords psycopg2.connect() gets from this engine (URL and connect_args)."""
    seen: dict[str, Any] = {}
    _capture(engine, seen)
    with pytest.raises(Exception) as raised:  # noqa: PT011 (the retry wraps what it meets)
        engine.connect()
    assert seen, raised.value
    return seen


def asyncpg_arguments(engine: AsyncEngine) -> dict[str, Any]:
    """The keywords asyncpg.connect() gets from this engine."""
    seen: dict[str, Any] = {}
    _capture(engine.sync_engine, seen)

    async def connect() -> None:
        async with engine.connect():
            pass

    with pytest.raises(Exception) as raised:  # noqa: PT011
        asyncio.run(connect())
    assert seen, raised.value
    return seen


def libpq_addresses(
    arguments: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> list[tuple[str, int]]:
    """Where libpq connects with these keywords, by its documented rules: hostaddr if given
    (else PGHOSTADDR), else host (else PGHOST), an empty host being its socket folder."""
    environ = environ or {}

    def given(name: str, variable: str) -> str:
        value = arguments.get(name)
        return str(value) if value is not None else environ.get(variable, "")

    hosts, addresses = given("host", "PGHOST").split(","), given("hostaddr", "PGHOSTADDR")
    count = len(addresses.split(",")) if addresses else len(hosts)
    ports = given("port", "PGPORT").split(",")
    ports = ports * count if len(ports) == 1 else ports
    result = []
    for i in range(count):
        address = addresses.split(",")[i] if addresses else ""
        host = hosts[i] if len(hosts) == count else ""
        result.append((address or host or "/var/run/postgresql", int(ports[i] or 5432)))
    return result


def asyncpg_addresses(arguments: Mapping[str, Any]) -> list[tuple[str, int]]:
    hosts, ports = arguments["host"], arguments["port"]
    if isinstance(hosts, str):
        return [(hosts, int(ports))]
    return list(zip(hosts, (int(p) for p in ports), strict=True))
