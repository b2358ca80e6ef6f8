"""`python -m backend` in a folder whose .env holds DATABASE_URL serves on that database, as a
developer following Neon's quickstart runs it."""

from pathlib import Path

from sqlalchemy.engine import URL

from tests.integration.test_main_job import start_main_job, stop_main_job


def test_the_main_job_serves_on_the_database_url_in_env(database_url: URL, tmp_path: Path) -> None:
    password = database_url.password
    assert password
    (tmp_path / ".env").write_text(
        f"DATABASE_URL='{database_url.render_as_string(hide_password=False)}'\n"
    )
    job, _, health = start_main_job(tmp_path / ".pgdata", cwd=tmp_path)
    output = stop_main_job(job)
    assert health is not None, output
    assert health["status"] == "ok"
    assert "Using DATABASE_URL from .env" in output
    assert f":{database_url.port}/{database_url.database}" in output  # the startup line's URL
    assert not (tmp_path / ".pgdata").exists()  # no embedded server was started
    assert password not in output
