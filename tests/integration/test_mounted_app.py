"""An app with the layer, mounted under another app: Starlette runs the outer app's lifespan
only. The layer starts at the mounted app's first request instead, and says once that its
engines will not be disposed; running the inner app's lifespan from the outer's does both."""

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import sqlalchemy as sa
from dependency_injector.wiring import inject
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from backend import AsyncSessionDep, Container, SessionDep
from tests.conftest import serving

router = APIRouter()


@router.get("/sync/one")
@inject
def one(session: SessionDep) -> int:
    return int(session.scalar(sa.text("SELECT 1")) or 0)


@router.get("/async/one")
@inject
async def one_async(session: AsyncSessionDep) -> int:
    return int(await session.scalar(sa.text("SELECT 1")) or 0)


def test_a_mounted_app_whose_lifespan_never_ran_starts_at_its_first_request(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    outer = FastAPI()
    outer.mount("/v2", serving(container, sys.modules[__name__]))
    with TestClient(outer) as client:
        assert client.get("/v2/sync/one").json() == 1
        assert client.get("/v2/async/one").json() == 1
        assert client.get("/v2/health/db").status_code == 200
    said = [
        r.getMessage() for r in caplog.records if r.name == "backend" and r.levelname == "WARNING"
    ]
    assert len(said) == 1
    assert "mounted at /v2 started without its lifespan" in said[0]
    assert "engines are not disposed" in said[0]


def test_a_mounted_app_works_when_the_outer_app_runs_its_lifespan(
    container: Container, flavour: str
) -> None:
    inner = serving(container, sys.modules[__name__])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with inner.router.lifespan_context(inner):
            yield

    outer = FastAPI(lifespan=lifespan)
    outer.mount("/v2", inner)
    with TestClient(outer) as client:
        assert client.get(f"/v2/{flavour}/one").json() == 1
        assert client.get("/v2/health/db").status_code == 200
