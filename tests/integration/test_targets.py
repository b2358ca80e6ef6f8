"""Both engines reach the same server, database and user however the target is spelled.

Issue 9, item 5: the async path dropped host, port, hostaddr, user, password and dbname given
as query parameters, and connected to localhost:5432 while the sync path used the intended
server. Item 8: an encrypted client key froze the async path on a terminal prompt.
"""

import os
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from backend import Container
from tests.unit.test_client_key import run_on_a_terminal
from tests.unit.tls_files import client_files

WHERE = sa.text("SELECT current_database(), current_user, inet_server_port()")


async def both_paths(container: Container) -> tuple[tuple[object, ...], tuple[object, ...]]:
    engine, async_engine = container.engine(), container.async_engine()
    with engine.connect() as connection:
        sync = tuple(connection.execute(WHERE).one())
    async with async_engine.connect() as connection:
        async_ = tuple((await connection.execute(WHERE)).one())
    engine.dispose()
    await async_engine.dispose()
    return sync, async_


def in_the_query(url: URL, **target: str) -> str:
    """`url` with everything that names the target moved into (or given by) its query."""
    query = {**url.query, **target}
    return "postgresql://@/?" + urlencode(query)


@pytest.mark.anyio
@pytest.mark.parametrize("spelling", ["host-list", "hostaddr", "libpq-variables"])
async def test_both_paths_reach_the_same_database(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, database_name: str, spelling: str
) -> None:
    assert database_url.host
    assert database_url.port
    assert database_url.password
    port = str(database_url.port)
    login = {"user": str(database_url.username), "password": database_url.password}
    if spelling == "host-list":
        # The first entry has no server: both drivers go on to the next, as libpq does.
        url = in_the_query(
            database_url,
            host=f"/nonexistent,{database_url.host}",
            port=f"{port},{port}",
            dbname=database_name,
            **login,
        )
    elif spelling == "hostaddr":
        url = in_the_query(
            database_url,
            host="localhost",
            hostaddr=database_url.host,
            port=port,
            dbname=database_name,
            **login,
        )
    else:
        url = in_the_query(database_url)
        for name, value in {
            "PGHOST": database_url.host,
            "PGPORT": port,
            "PGUSER": login["user"],
            "PGPASSWORD": login["password"],
            "PGDATABASE": database_name,
        }.items():
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", url)

    sync, async_ = await both_paths(Container())

    assert sync == async_
    assert sync[:2] == (database_name, login["user"])


CONNECT_BOTH = """
import asyncio
import sqlalchemy as sa
from backend import Container

async def main():
    container = Container()
    with container.engine().connect() as connection:
        print("sync", connection.scalar(sa.text("SELECT 1")), flush=True)
    async with container.async_engine().connect() as connection:
        print("async", await connection.scalar(sa.text("SELECT 1")), flush=True)

asyncio.run(main())
"""


def test_an_encrypted_client_key_connects_on_both_paths_without_a_prompt(
    database_url: URL, tmp_path: Path
) -> None:
    files = client_files(tmp_path)
    url = database_url.update_query_dict(
        {
            "sslcert": str(files.cert_file),
            "sslkey": str(files.key_file),
            "sslpassword": files.passphrase,
        }
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PG"))}
    env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    output, terminal = run_on_a_terminal(env, CONNECT_BOTH)
    assert "pass phrase" not in terminal.lower()
    assert output.splitlines()[-2:] == ["sync 1", "async 1"], output
