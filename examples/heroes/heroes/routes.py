"""CRUD on heroes, one route per session alias: write, read, and their async twins."""

from dependency_injector.wiring import inject
from fastapi import APIRouter, HTTPException
from sqlmodel import select

from backend import AsyncReadSessionDep, AsyncSessionDep, ReadSessionDep, SessionDep
from heroes.models import Hero, HeroIn

router = APIRouter(prefix="/heroes")


@router.post("", response_model=Hero, status_code=201)
@inject
def create_hero(hero: HeroIn, session: SessionDep) -> Hero:
    row = Hero.model_validate(hero)
    session.add(row)
    session.commit()
    return row


@router.get("", response_model=list[Hero])
@inject
def list_heroes(session: ReadSessionDep) -> list[Hero]:
    return list(session.exec(select(Hero).order_by(Hero.id)))


@router.get("/{hero_id}", response_model=Hero)
@inject
async def read_hero(hero_id: int, session: AsyncReadSessionDep) -> Hero:
    hero = await session.get(Hero, hero_id)
    if hero is None:
        raise HTTPException(status_code=404, detail="no such hero")
    return hero


@router.patch("/{hero_id}", response_model=Hero)
@inject
async def rename_hero(hero_id: int, hero: HeroIn, session: AsyncSessionDep) -> Hero:
    row = await session.get(Hero, hero_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such hero")
    row.sqlmodel_update(hero.model_dump(exclude_unset=True))
    await session.commit()
    return row


@router.delete("/{hero_id}", status_code=204)
@inject
def delete_hero(hero_id: int, session: SessionDep) -> None:
    row = session.get(Hero, hero_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such hero")
    session.delete(row)
    session.commit()
