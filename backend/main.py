"""`uvicorn backend.main:app`: the layer's own app, with no routes but `/health/db`."""

from backend.app import create_app, install

__all__ = ["app", "create_app", "install"]

app = create_app()
