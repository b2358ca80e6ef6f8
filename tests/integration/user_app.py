"""A user's own app, as a user writes it: served on the embedded database by
`python -m backend --app tests.integration.user_app:app` (test_main_job.py)."""

import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter

from backend import SessionDep
from backend.main import create_app

router = APIRouter()


@router.get("/hello")
@inject
def hello(session: SessionDep) -> dict[str, object]:
    # The port of the server it talks to: the test compares it with `python -m backend url`.
    port = session.scalar(sa.text("SELECT current_setting('port')"))
    return {"hello": "from the user's app", "database_port": int(port or 0)}


app = create_app(routers=[router], wire=[__name__])
