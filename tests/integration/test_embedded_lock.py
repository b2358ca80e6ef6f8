"""One PostgresServer at a time runs a folder's server; another neither starts nor stops it."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.embedded import AlreadyRunning, PostgresServer, embedded_bindir


@pytest.fixture
def folder() -> Iterator[Path]:
    # Not under pytest's tmp_path: that sits in a 0700 folder the server's user cannot reach.
    path = Path(tempfile.mkdtemp(prefix="backend-lock-"))
    yield path
    PostgresServer(embedded_bindir(), path).stop()  # what a failure here leaves behind
    shutil.rmtree(path, ignore_errors=True)


def answers(server: PostgresServer) -> bool:
    engine = sa.create_engine(server.url(), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return bool(connection.scalar(sa.text("SELECT 1")) == 1)
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def test_a_second_server_on_a_running_folder_neither_starts_nor_stops_it(folder: Path) -> None:
    first = PostgresServer(embedded_bindir(), folder)
    first.start()
    second = PostgresServer(embedded_bindir(), folder)

    with pytest.raises(AlreadyRunning, match=f"already run by process {os.getpid()} at "):
        second.start()
    with pytest.raises(AlreadyRunning):
        second.stop()

    assert answers(first)
    first.stop()
    assert not first.is_running()


def test_the_folder_is_free_again_once_its_server_stopped(folder: Path) -> None:
    first = PostgresServer(embedded_bindir(), folder)
    first.start()
    first.stop()

    second = PostgresServer(embedded_bindir(), folder)
    second.start()
    try:
        assert second.port == first.port  # the folder's own port
        assert answers(second)
    finally:
        second.stop()
