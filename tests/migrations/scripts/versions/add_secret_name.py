"""A hero's secret name, indexed.

Revision ID: add_secret_name
Revises: create_hero
"""

import sqlalchemy as sa
from alembic import op

revision: str = "add_secret_name"
down_revision: str | None = "create_hero"


def upgrade() -> None:
    op.add_column("migrated_hero", sa.Column("secret_name", sa.String(100)))
    op.create_index("ix_migrated_hero_secret_name", "migrated_hero", ["secret_name"])


def downgrade() -> None:
    op.drop_index("ix_migrated_hero_secret_name", table_name="migrated_hero")
    op.drop_column("migrated_hero", "secret_name")
