"""batch generation: rows of a prompts file streamed as outputs (row, row_id, status, error; one per job, row
and index), row counts and an ETA on the job, and a retry's row subset

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 22:40:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | Sequence[str] | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the row columns to outputs and jobs."""
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('row', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('row_id', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('status', sa.String(length=8), nullable=False, server_default='ok'))
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
        batch_op.create_unique_constraint('uq_outputs_job_id', ['job_id', 'row', 'index'])
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rows_total', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('rows_done', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('rows_failed', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('eta_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('only_rows', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('retry_of', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_jobs_retry_of_jobs', 'jobs', ['retry_of'], ['id'])


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_retry_of_jobs', type_='foreignkey')
        for column in ('retry_of', 'only_rows', 'eta_at', 'rows_failed', 'rows_done', 'rows_total'):
            batch_op.drop_column(column)
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_outputs_job_id', type_='unique')
        for column in ('error', 'status', 'row_id', 'row'):
            batch_op.drop_column(column)
