"""scheduling: team quotas and decayed usage, token last use, preemption and usage fields on jobs, usage_days

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 22:30:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the columns fair share, quotas, preemption and usage read, and the per-day usage table."""
    with op.batch_alter_table('teams') as batch:
        batch.add_column(sa.Column('max_gpus', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('gpu_hours_per_week', sa.Double(), nullable=True))
        batch.add_column(sa.Column('usage', sa.Double(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('usage_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('api_tokens') as batch:
        batch.add_column(sa.Column('last_used_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('preemptible', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column('preempt_requested', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('preemptions', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('run_started_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('run_start_step', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('accrued_until', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('gpu_seconds', sa.Double(), nullable=False, server_default='0'))
    op.create_index('ix_jobs_queue', 'jobs', ['status', 'pool', 'team_id', 'priority', 'created_at', 'id'])
    op.create_index('ix_jobs_sent', 'jobs', ['status', 'pool', 'dispatched_at'])
    op.create_index('ix_jobs_accrued_until', 'jobs', ['accrued_until'])
    op.create_table('usage_days',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('gpu_seconds', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_usage_days_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_usage_days_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_days')),
    sa.UniqueConstraint('job_id', 'day', name=op.f('uq_usage_days_job_id'))
    )
    op.create_index('ix_usage_days_team_day', 'usage_days', ['team_id', 'day'])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index('ix_usage_days_team_day', table_name='usage_days')
    op.drop_table('usage_days')
    op.drop_index('ix_jobs_accrued_until', table_name='jobs')
    op.drop_index('ix_jobs_sent', table_name='jobs')
    op.drop_index('ix_jobs_queue', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        for column in ('gpu_seconds', 'accrued_until', 'run_start_step', 'run_started_at', 'preemptions',
                       'preempt_requested', 'preemptible'):
            batch.drop_column(column)
    with op.batch_alter_table('api_tokens') as batch:
        batch.drop_column('last_used_at')
    with op.batch_alter_table('teams') as batch:
        for column in ('usage_at', 'usage', 'gpu_hours_per_week', 'max_gpus'):
            batch.drop_column(column)
