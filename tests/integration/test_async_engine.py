"""The async engine on a real server: what a -pooler URL makes of its connections."""

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from backend import Container
from backend.testing.drivers import run_driver
from tests.conftest import use_database


@pytest.mark.anyio
@pytest.mark.parametrize("pooler", ["pgbouncer", "none"])
async def test_a_pooler_connection_caches_no_prepared_statement(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, pooler: str
) -> None:
    use_database(monkeypatch, database_url, pooler=pooler)
    async_engine = Container().async_engine()
    if run_driver() == "psycopg":
        async with async_engine.connect() as connection:
            for _ in range(6):  # psycopg prepares what runs five times, unless told not to
                assert await connection.scalar(sa.text("SELECT 1")) == 1
            adapted = await connection.get_raw_connection()
            threshold = adapted.driver_connection.prepare_threshold  # type: ignore[union-attr]
        await async_engine.dispose()
        assert threshold == (None if pooler == "pgbouncer" else 5)
        return
    async with async_engine.connect() as connection:
        for _ in range(3):  # a statement asyncpg would otherwise cache and re-use by name
            assert await connection.scalar(sa.text("SELECT 1")) == 1
        adapted = await connection.get_raw_connection()
        asyncpg_connection = adapted.driver_connection
        statement_cache = asyncpg_connection._stmt_cache.get_max_size()  # type: ignore[union-attr]
        sqlalchemy_cache = adapted.dbapi_connection._prepared_statement_cache  # type: ignore[union-attr]
        application_name = await connection.scalar(sa.text("SHOW application_name"))
    await async_engine.dispose()

    if pooler == "pgbouncer":
        assert (statement_cache, sqlalchemy_cache) == (0, None)
        assert application_name == ""  # no startup parameters beyond PgBouncer's
    else:
        assert statement_cache > 0
        assert sqlalchemy_cache is not None
        assert application_name == "backend"
