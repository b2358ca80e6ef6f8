"""The database layer for FastAPI + SQLModel services on Neon serverless Postgres.

The public surface, importable from here::

    from backend import install, get_session, SessionDep

Each name is imported on first use (PEP 562), so that `import backend`, which the pytest plugin
does whenever pytest starts, costs nothing until the layer is used.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__all__ = [
    "AsyncReadSessionDep",
    "AsyncSessionDep",
    "ConfigurationError",
    "Container",
    "EngineHookError",
    "EngineRole",
    "OutsideRequestError",
    "ReadOnlyError",
    "ReadSessionDep",
    "RequestScope",
    "SessionDep",
    "WiringError",
    "create_app",
    "get_async_session",
    "get_session",
    "install",
    "on_engine",
    "provide",
    "use_database",
]

_WHERE = {
    "AsyncReadSessionDep": "backend.db.deps",
    "AsyncSessionDep": "backend.db.deps",
    "ConfigurationError": "backend.settings",
    "Container": "backend.db.container",
    "EngineHookError": "backend.db.container",
    "EngineRole": "backend.db.container",
    "OutsideRequestError": "backend.db.sessions.scope",
    "ReadOnlyError": "backend.db.engines.readonly",
    "ReadSessionDep": "backend.db.deps",
    "RequestScope": "backend.db.sessions.scope",
    "SessionDep": "backend.db.deps",
    "WiringError": "backend.wiring",
    "create_app": "backend.app",
    "get_async_session": "backend.db.deps",
    "get_session": "backend.db.deps",
    "install": "backend.app",
    "on_engine": "backend.db.container",
    "provide": "backend.db.deps",
    "use_database": "backend.db.container",
}

if TYPE_CHECKING:
    from backend.app import create_app, install
    from backend.db.container import (
        Container,
        EngineHookError,
        EngineRole,
        on_engine,
        use_database,
    )
    from backend.db.deps import (
        AsyncReadSessionDep,
        AsyncSessionDep,
        ReadSessionDep,
        SessionDep,
        get_async_session,
        get_session,
        provide,
    )
    from backend.db.engines.readonly import ReadOnlyError
    from backend.db.sessions.scope import OutsideRequestError, RequestScope
    from backend.settings import ConfigurationError
    from backend.wiring import WiringError


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'backend' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
