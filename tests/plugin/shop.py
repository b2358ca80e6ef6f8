"""A user's package, as files: the app the plugin's tests run their tests against.

`shop` is what a service on backend looks like: SQLModel tables, routes on each session alias
(sync and async, write and read, `Depends(get_session)`), `create_app()`; its configuration
names the app for the plugin, as the README says to.
"""

import textwrap

import pytest

MODELS = """
from sqlmodel import Field, SQLModel


class Item(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
"""

ROUTES = """
from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends
from sqlalchemy import text
from sqlmodel import Session, select

from backend import AsyncReadSessionDep, AsyncSessionDep, ReadSessionDep, SessionDep
from backend.db.session import get_session
from shop.models import Item

router = APIRouter()


@router.post("/items", status_code=201)
@inject
def add_item(name: str, session: SessionDep) -> Item:
    item = Item(name=name)
    session.add(item)
    session.commit()
    return item


@router.post("/async/items", status_code=201)
@inject
async def add_item_async(name: str, session: AsyncSessionDep) -> Item:
    item = Item(name=name)
    session.add(item)
    await session.commit()
    return item


@router.post("/plain/items", status_code=201)
def add_item_plain(name: str, session: Session = Depends(get_session)) -> Item:
    item = Item(name=name)
    session.add(item)
    session.commit()
    return item


@router.post("/checked/items", status_code=201)
@inject
def add_item_checked(name: str, session: SessionDep, reads: ReadSessionDep) -> list[str]:
    # The write session first, a read in the middle, then the commit.
    session.add(Item(name=name))
    session.flush()
    names = [item.name for item in reads.exec(select(Item).order_by(Item.name))]
    session.commit()
    return names


@router.get("/items")
@inject
def list_items(session: ReadSessionDep) -> list[str]:
    return [item.name for item in session.exec(select(Item).order_by(Item.name))]


@router.get("/async/items")
@inject
async def list_items_async(session: AsyncReadSessionDep) -> list[str]:
    return [item.name for item in (await session.exec(select(Item).order_by(Item.name)))]


@router.post("/read/items")
@inject
def add_item_through_a_read_session(name: str, session: ReadSessionDep) -> None:
    session.add(Item(name=name))
    session.commit()


@router.post("/read/sql")
@inject
def write_sql_through_a_read_session(name: str, session: ReadSessionDep) -> None:
    session.exec(text("INSERT INTO item (name) VALUES (:name)").bindparams(name=name))


@router.post("/lock")
@inject
def lock(session: SessionDep) -> None:
    # Session-level: it outlives the transaction, and the connection goes back to a pool.
    session.exec(text("SELECT pg_advisory_lock(42)"))
    session.commit()


@router.get("/locks")
@inject
def locks(session: ReadSessionDep) -> int:
    held = session.exec(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))
    return held.scalar_one()


@router.post("/tenant")
@inject
def set_tenant(tenant: str, session: SessionDep) -> None:
    # A session-level SET, not SET LOCAL: what breaks behind Neon's pooler.
    session.exec(text(f"SET shop.tenant = '{tenant}'"))
    session.commit()


@router.get("/async/tenant")
@inject
async def tenant(session: AsyncReadSessionDep) -> str | None:
    result = await session.exec(text("SELECT current_setting('shop.tenant', true)"))
    return result.scalar()
"""

MAIN = """
from backend.main import create_app
from shop import routes

app = create_app(routers=[routes.router], wire=[routes])
"""

CONFIG = """
[tool.pytest.ini_options]
backend_app = "shop.main:app"
pythonpath = ["."]
"""


def write_shop(pytester: pytest.Pytester) -> None:
    """The shop package and its pytest configuration, in the pytester folder."""
    package = pytester.mkpydir("shop")
    for name, source in (("models", MODELS), ("routes", ROUTES), ("main", MAIN)):
        (package / f"{name}.py").write_text(textwrap.dedent(source).lstrip())
    pytester.makepyprojecttoml(CONFIG)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The user's test run, as they start it: `pytest` in a process of its own."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)
