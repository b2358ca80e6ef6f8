"""The app: backend's create_app() with our routes, wiring and lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlmodel import SQLModel

from backend.main import create_app
from heroes import routes


@asynccontextmanager
async def create_tables(app: FastAPI) -> AsyncIterator[None]:
    # A real service runs its migrations instead; the container is ready here.
    SQLModel.metadata.create_all(app.state.container.engine())
    yield


app = create_app(routers=[routes.router], wire=[routes], lifespan=create_tables)
