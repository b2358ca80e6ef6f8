"""Each table written through SessionDep or AsyncSessionDep, read through the read aliases."""

from dependency_injector.wiring import inject
from fastapi import APIRouter, HTTPException
from sqlmodel import select

from backend import AsyncReadSessionDep, AsyncSessionDep, ReadSessionDep, SessionDep
from store.models import TABLES, Named

router = APIRouter()


def model(table: str) -> type[Named]:
    if table not in TABLES:
        raise HTTPException(status_code=404, detail="no such table")
    return TABLES[table]


@router.post("/{table}", status_code=201)
@inject
def add(table: str, name: str, session: SessionDep) -> dict[str, int | None]:
    row = model(table)(name=name)
    session.add(row)
    session.commit()
    return {"id": row.id}


@router.post("/async/{table}", status_code=201)
@inject
async def add_async(table: str, name: str, session: AsyncSessionDep) -> dict[str, int | None]:
    row = model(table)(name=name)
    session.add(row)
    await session.commit()
    return {"id": row.id}


@router.get("/{table}")
@inject
def names(table: str, session: ReadSessionDep) -> list[str]:
    kind = model(table)
    return list(session.exec(select(kind.name).order_by(kind.name)))  # type: ignore[attr-defined]


@router.get("/async/{table}")
@inject
async def names_async(table: str, session: AsyncReadSessionDep) -> list[str]:
    kind = model(table)
    rows = await session.exec(select(kind.name).order_by(kind.name))  # type: ignore[attr-defined]
    return list(rows)
