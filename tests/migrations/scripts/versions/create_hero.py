"""The hero table.

Revision ID: create_hero
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision: str = "create_hero"
down_revision: str | None = None


def upgrade() -> None:
    op.create_table(
        "migrated_hero",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("migrated_hero")
