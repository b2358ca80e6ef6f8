"""The dependency-injection container: config → settings → engine → per-request session."""

from pathlib import Path
from typing import Annotated, Any

import yaml
from dependency_injector import containers, providers
from dependency_injector.wiring import Closing, Provide
from fastapi import Depends
from sqlmodel import Session

from backend.db.engine import create_sync_engine
from backend.db.session import session_resource
from backend.settings import ConfigurationError, load_settings

CONFIG_FILE = Path(__file__).resolve().parent.parent / "config.yml"


class Container(containers.DeclarativeContainer):
    # Read when a Container() is made, with the environment of that moment.
    config = providers.Configuration(yaml_files=[CONFIG_FILE])
    settings = providers.ThreadSafeSingleton(load_settings, config.database)
    # A Singleton, not a Resource: Closing shuts down every Resource it reaches, and would
    # dispose the engine after each request. Thread-safe: sync routes run in a threadpool.
    engine = providers.ThreadSafeSingleton(create_sync_engine, settings)
    # Per request: its state lives in a ContextVar, and each request runs in its own context.
    # Never initialise it outside a request (e.g. a blanket init_resources()): every request
    # would then share that one session.
    session = providers.ContextLocalResource(session_resource, engine=engine)

    def __new__(cls, **overriding_providers: Any) -> "Container":
        # ${VAR} is pasted into the YAML text before parsing, so a value that breaks YAML makes
        # PyYAML quote the offending line, DATABASE_URL's password included.
        try:
            return super().__new__(cls, **overriding_providers)
        except yaml.YAMLError:
            raise ConfigurationError(
                f"{CONFIG_FILE.name} is not valid YAML once the DATABASE_* variables are "
                "substituted: a value holds a character YAML cannot take there (in "
                "DATABASE_URL, percent-encode the password, e.g. ' as %27)"
            ) from None


# The route idiom: `def route(session: SessionDep)` gets its own session, closed after the route.
SessionDep = Annotated[Session, Depends(Closing[Provide[Container.session]])]
