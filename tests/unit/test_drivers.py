"""Which driver each engine runs: the URL's scheme for the sync one, DATABASE_ASYNC_DRIVER for the
async one; and what each is handed."""

import importlib.util
import logging

import pytest

from backend.db.engines import build
from backend.settings import ConfigurationError, MissingDriver
from tests.unit.test_settings import NEON, make_container

HOST = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
POOLER = NEON.replace(HOST, HOST.replace("-123456", "-123456-pooler"))
PSYCOPG = NEON.replace("postgresql://", "postgresql+psycopg://")


@pytest.mark.parametrize(
    ("scheme", "driver"),
    [
        ("postgres://", "psycopg2"),
        ("postgresql://", "psycopg2"),
        ("postgresql+psycopg2://", "psycopg2"),
        ("postgresql+asyncpg://", "psycopg2"),
        ("postgresql+psycopg://", "psycopg"),
    ],
)
def test_the_urls_scheme_picks_the_sync_driver(
    monkeypatch: pytest.MonkeyPatch, scheme: str, driver: str
) -> None:
    container = make_container(monkeypatch, NEON.replace("postgresql://", scheme))
    assert container.connection_plan().sync_driver_name == driver
    assert container.engine().dialect.driver == driver
    # The async engine is asyncpg's unless DATABASE_ASYNC_DRIVER says otherwise.
    assert container.async_engine().dialect.driver == "asyncpg"


def test_database_async_driver_psycopg_runs_the_async_engine_on_psycopg_3(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    container = make_container(
        monkeypatch, NEON + "?channel_binding=require", DATABASE_ASYNC_DRIVER="psycopg"
    )
    engine = container.async_engine()
    assert engine.dialect.driver == "psycopg"
    # libpq's own parameters reach libpq: channel binding is enforced, nothing is dropped.
    assert engine.url.query["channel_binding"] == "require"
    assert engine.url.query["sslmode"] == "require"
    assert "channel_binding" not in caplog.text


def test_asyncpg_drops_channel_binding_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    make_container(monkeypatch, NEON + "?channel_binding=require").async_engine()
    assert "channel_binding is not enforced on the async path" in caplog.text


@pytest.mark.parametrize("async_driver", ["asyncpg", "psycopg"])
def test_psycopg_prepares_nothing_behind_the_pooler(
    monkeypatch: pytest.MonkeyPatch, async_driver: str
) -> None:
    url = POOLER.replace("postgresql://", "postgresql+psycopg://")
    pooled = make_container(monkeypatch, url, DATABASE_ASYNC_DRIVER=async_driver).connection_plan()
    assert pooled.sync_driver.connect_args["prepare_threshold"] is None
    if async_driver == "psycopg":
        assert pooled.async_driver.connect_args["prepare_threshold"] is None
    direct = make_container(monkeypatch, PSYCOPG).connection_plan()
    # Direct, psycopg's own prepared statements are safe, and save a parse per repeat.
    assert "prepare_threshold" not in direct.sync_driver.connect_args


def test_a_driver_the_layer_does_not_run_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r"the driver 'pg8000'.*postgresql\+psycopg://"):
        make_container(monkeypatch, NEON.replace("postgresql://", "postgresql+pg8000://")).engine()


def test_an_unknown_async_driver_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_ASYNC_DRIVER must be one of"):
        make_container(monkeypatch, DATABASE_ASYNC_DRIVER="psycopg3").settings()


def test_a_missing_psycopg_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(build, "find_spec", lambda name: None if name == "psycopg" else real(name))
    with pytest.raises(MissingDriver, match=r"sync engine needs psycopg 3.*\[psycopg\]"):
        make_container(monkeypatch, PSYCOPG).engine()
    container = make_container(monkeypatch, DATABASE_ASYNC_DRIVER="psycopg")
    with pytest.raises(MissingDriver, match=r"async engine needs psycopg 3.*\[psycopg\]"):
        container.async_engine()
    assert container.engine().dialect.driver == "psycopg2"  # the sync path needs no extra
