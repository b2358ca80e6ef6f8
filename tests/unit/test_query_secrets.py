"""Secrets given as query parameters: hidden wherever a URL is shown, still given to the drivers.

Issue 9, item 4: `?password=` and `?sslpassword=` were shown by repr(settings), repr(engine) and
engine.url; SQLAlchemy masks only the password in the URL's own place.
"""

import logging

import pytest

from backend.db import session
from backend.settings import ConfigurationError
from tests.unit.drivers import asyncpg_arguments, psycopg2_arguments
from tests.unit.test_settings import NEON, make_container

HOST = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
PASSWORD, PASSPHRASE = "QueryPassw0rd", "KeyPassphr4se"


def shown(monkeypatch: pytest.MonkeyPatch, url: str, caplog: pytest.LogCaptureFixture) -> str:
    """Everything the layer renders for this URL: reprs, URLs, logs."""
    caplog.set_level(logging.DEBUG)
    container = make_container(monkeypatch, url, DATABASE_ECHO="true")
    engine, async_engine = container.engine(), container.async_engine()
    monkeypatch.setattr(session, "default_container", lambda: container)
    texts = [
        repr(container.settings()),
        str(container.settings()),
        repr(engine),
        str(engine.url),
        repr(engine.url),
        repr(async_engine),
        str(async_engine.url),
        repr(session.engine.url),
        str(session.engine.url),
        caplog.text,
    ]
    return "\n".join(texts)


@pytest.mark.parametrize(
    "query",
    [
        f"?password={PASSWORD}",
        f"?sslmode=require&password={PASSWORD}&application_name=x",
        f"?user=alex&password={PASSWORD}&dbname=neondb",
    ],
)
def test_a_password_in_the_query_is_hidden_and_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    url = f"postgresql://{HOST}/neondb{query}"
    assert PASSWORD not in shown(monkeypatch, url, caplog)
    container = make_container(monkeypatch, url)
    assert psycopg2_arguments(container.engine())["password"] == PASSWORD
    assert asyncpg_arguments(container.async_engine())["password"] == PASSWORD


def test_the_query_password_wins_as_with_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    container = make_container(monkeypatch, f"postgresql://alex:old@{HOST}/db?password={PASSWORD}")
    assert psycopg2_arguments(container.engine())["password"] == PASSWORD


def test_sslpassword_is_hidden_and_given_to_libpq(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{NEON}?sslpassword={PASSPHRASE}&sslmode=require"
    assert PASSPHRASE not in shown(monkeypatch, url, caplog)
    assert "sslpassword" not in str(make_container(monkeypatch, url).engine().url)
    engine = make_container(monkeypatch, url).engine()
    assert psycopg2_arguments(engine)["sslpassword"] == PASSPHRASE


def test_errors_never_show_a_query_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://{HOST}:99999/db?password={PASSWORD}&sslpassword={PASSPHRASE}"
    for bad in (url, url.replace(":99999", "") + "&sslmode=disable"):
        container = make_container(monkeypatch, bad)
        for engine in (container.engine, container.async_engine):
            with pytest.raises(ConfigurationError) as error:
                engine()
            for text in (str(error.value), repr(error.value)):
                assert PASSWORD not in text
                assert PASSPHRASE not in text
