"""A process holding more than 1024 files: its new sockets get descriptors past select()'s
FD_SETSIZE, and the replica engines' checkout hook must still read them.

The replica here is the test's own database named in DATABASE_READ_URL: the hook runs on
every replica engine's checkout, standby or not (tests/replicas has real standbys).
"""

import os
import resource
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL

from backend import AsyncReadSessionDep, Container, ReadSessionDep
from tests.conftest import serving, use_database

FILES = 1100  # past 1024, so a socket opened next gets a descriptor select() refuses
router = APIRouter()
WHERE = sa.text("SELECT inet_server_port()")


@router.get("/sync/port")
@inject
def port_sync(session: ReadSessionDep) -> Any:
    return session.scalar(WHERE)


@router.get("/async/port")
@inject
async def port_async(session: AsyncReadSessionDep) -> Any:
    return await session.scalar(WHERE)


@pytest.fixture
def many_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILES + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit on open files is {hard}: fewer than {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    opened: list[int] = []
    try:
        while len(opened) < FILES:
            opened.append(os.open(os.devnull, os.O_RDONLY))
        assert max(opened) >= 1024
        yield
    finally:
        for descriptor in opened:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_replica_read_is_answered_with_more_than_1024_files_open(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, many_files: None, flavour: str
) -> None:
    # The server's own port (on a build without OpenSSL the URL's is the TLS front's).
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    with engine.connect() as connection:
        server_port = connection.scalar(WHERE)
    engine.dispose()
    # fail, not primary: an error in the hook must not hide behind the fallback.
    replica = database_url.render_as_string(hide_password=False)
    use_database(monkeypatch, database_url, read_url=replica, read_fallback="fail")
    with TestClient(serving(Container(), sys.modules[__name__])) as client:
        for _ in range(3):  # a new connection, then the pooled one checked out again
            answer = client.get(f"/{flavour}/port")
            assert answer.status_code == 200, answer.text
            assert answer.json() == server_port
