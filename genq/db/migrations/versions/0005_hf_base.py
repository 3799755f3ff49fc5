"""hf base: a generate job may sample a pretrained model of the models folder directly (jobs.base)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 22:15:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add jobs.base: the models-folder name a generate job samples when it has no source job."""
    op.add_column('jobs', sa.Column('base', sa.String(length=128), nullable=True))


def downgrade() -> None:
    """Drop jobs.base."""
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('base')
