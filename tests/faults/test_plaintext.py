"""Row 8: plaintext is refused, by the layer before it starts and by every endpoint."""

import psycopg2
import pytest
from fastapi.testclient import TestClient

from backend import Container
from backend.main import create_app
from backend.settings import ConfigurationError
from backend.testing.postgres import Door, TestServer

SECRET = "pl41ntext-S3cret"


def test_an_app_for_a_remote_host_without_tls_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql://app:{SECRET}@ep-quiet-sea-123456.eu-central-1.aws.neon.tech/db"
    monkeypatch.setenv("DATABASE_URL", url + "?sslmode=disable")
    with (
        pytest.raises(ConfigurationError, match="sslmode=disable would allow plaintext") as error,
        TestClient(create_app(Container())),
    ):
        pass
    assert SECRET not in str(error.value)


@pytest.mark.parametrize(
    ("endpoint", "refusal"),
    [
        ("direct", "no encryption"),  # pg_hba.conf has hostssl lines only
        ("front", "connection is insecure (try using `sslmode=require`)"),  # Neon's words
        ("pooler", "SSL required"),  # PgBouncer's client_tls_sslmode=require
    ],
)
def test_every_endpoint_refuses_a_plaintext_client(
    request: pytest.FixtureRequest, postgres: TestServer, endpoint: Door, refusal: str
) -> None:
    if endpoint == "direct" and not postgres.direct_tls:
        pytest.skip("this PostgreSQL build has no TLS: clients reach it through the front")
    fixture = {"direct": "database_url", "front": "front_url", "pooler": "pooler_url"}[endpoint]
    request.getfixturevalue(fixture)  # skips where this endpoint is not running
    url = postgres.url("postgres", endpoint).set(drivername="postgresql", query={})
    plaintext = url.update_query_dict({"sslmode": "disable"})
    with pytest.raises(psycopg2.OperationalError) as error:
        psycopg2.connect(plaintext.render_as_string(hide_password=False))
    assert refusal in str(error.value)
