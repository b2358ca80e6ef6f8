"""`Depends(provide(MyContainer.x))`: your own providers, from the request's own app container.

Two apps in one process, each with its own container class and its own pools; the service a
provider builds on the session is the request's session; the spelling of earlier releases
(`ProvideOnLoop[...]`) and dependency-injector's own `Provide[...]` give the same; a provider
the app's container does not have is refused by name.
"""

import warnings
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
from dependency_injector import providers
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlmodel import Session

from backend import Container, SessionDep, create_app, provide
from backend.container import ProvideOnLoop
from tests.conftest import use_database


class Greeter:
    def __init__(self, session: Session, greeting: str) -> None:
        self.session, self.greeting = session, greeting


class EnglishContainer(Container):
    greeter = providers.Factory(Greeter, session=Container.session, greeting="hello")


class FrenchContainer(Container):
    greeter = providers.Factory(Greeter, session=Container.session, greeting="bonjour")


class OtherContainer(Container):
    only_here = providers.Object("nowhere else")


router = APIRouter()


@router.get("/english")
def english(
    greeter: Annotated[Greeter, Depends(provide(EnglishContainer.greeter))],
    earlier: Annotated[Greeter, Depends(ProvideOnLoop[EnglishContainer.greeter])],
    session: SessionDep,
    engine: Annotated[Engine, Depends(provide(Container.engine))],
) -> dict[str, Any]:
    return {
        "greeting": greeter.greeting,
        "one_session": greeter.session is session is earlier.session,
        "pid": session.scalar(sa.text("SELECT pg_backend_pid()")),
        "engine": id(engine),
    }


@router.get("/french")
@inject
def french(
    greeter: Annotated[Greeter, Depends(provide(FrenchContainer.greeter))],
    wired: Greeter = Depends(Provide[FrenchContainer.greeter]),
    engine: Engine = Depends(provide(Container.engine)),
) -> dict[str, Any]:
    return {
        "greeting": greeter.greeting,
        "one_session": greeter.session is wired.session,
        "engine": id(engine),
    }


@router.get("/not-mine")
def not_mine(value: Annotated[str, Depends(provide(OtherContainer.only_here))]) -> str:
    return value


def app_of(container: Container, *paths: str) -> FastAPI:
    app = create_app(container, wire=[__name__] if "/french" in paths else ())
    for route in router.routes:
        if getattr(route, "path", None) in paths:
            app.router.routes.append(route)
    return app


def test_two_apps_two_containers_each_its_own(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    use_database(monkeypatch, database_url)
    english_container, french_container = EnglishContainer(), FrenchContainer()
    english_app = app_of(english_container, "/english")
    french_app = app_of(french_container, "/french")
    with TestClient(english_app) as en, TestClient(french_app) as fr:
        for _ in range(2):  # interleaved: nothing of one app's sticks to the other
            said = en.get("/english").json()
            assert said["greeting"] == "hello"
            assert said["one_session"]
            assert said["engine"] == id(english_container.engine())
            said = fr.get("/french").json()
            assert said["greeting"] == "bonjour"
            assert said["one_session"]
            assert said["engine"] == id(french_container.engine())
    assert english_container.engine() is not french_container.engine()


def test_a_provider_the_apps_container_lacks_is_named(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    use_database(monkeypatch, database_url)
    app = app_of(EnglishContainer(), "/not-mine")
    with TestClient(app) as client, pytest.raises(LookupError) as refused:
        client.get("/not-mine")
    assert "has no such provider" in str(refused.value)
    assert "EnglishContainer" in str(refused.value)


def test_the_same_provider_from_a_container_of_the_app_that_has_it(
    monkeypatch: pytest.MonkeyPatch, database_url: URL
) -> None:
    use_database(monkeypatch, database_url)
    with TestClient(app_of(OtherContainer(), "/not-mine")) as client:
        assert client.get("/not-mine").json() == "nowhere else"


def test_inject_over_the_aliases_and_provide_is_quiet() -> None:
    # Apps written for earlier releases put @inject over routes taking only the aliases;
    # dependency-injector warns about an @inject with no marker to inject.
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @inject
        def route(
            session: SessionDep,
            greeter: Annotated[Greeter, Depends(provide(EnglishContainer.greeter))],
        ) -> None:
            del session, greeter
