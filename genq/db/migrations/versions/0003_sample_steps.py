"""outputs.step: gallery samples drawn at a training step (None: a job's final outputs)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 19:50:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('step', sa.Integer(), nullable=True))
        batch_op.create_index('ix_outputs_job_step', ['job_id', 'step'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.drop_index('ix_outputs_job_step')
        batch_op.drop_column('step')
