"""metric rollups: block summaries of each metric series, so charts of long series read blocks, not points

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 19:30:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create metric_rollups and fill it from the metrics already recorded."""
    op.create_table('metric_rollups',
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('block', sa.Integer(), nullable=False),
    sa.Column('lo', sa.Double(), nullable=True),
    sa.Column('hi', sa.Double(), nullable=True),
    sa.Column('last_step', sa.Integer(), nullable=False),
    sa.Column('last_value', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_metric_rollups_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'name', 'level', 'block', name=op.f('pk_metric_rollups'))
    )
    from sqlalchemy.orm import Session

    from genq.metrics import refresh_rollups

    series = sa.text("SELECT job_id, name, min(step), max(step) FROM metrics GROUP BY job_id, name")
    with Session(bind=op.get_bind()) as session:
        for job_id, name, lo, hi in session.execute(series).all():
            refresh_rollups(session, job_id, name, lo, hi)


def downgrade() -> None:
    """Drop metric_rollups."""
    op.drop_table('metric_rollups')
