"""The throwaway model of the migration tests' Alembic project (alembic.ini beside it): what a
project's models module is to its env.py."""

from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()

migrated_hero = Table(
    "migrated_hero",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("secret_name", String(100), index=True),
)
