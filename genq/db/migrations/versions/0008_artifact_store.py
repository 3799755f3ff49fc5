"""artifact store and worker hosts: content hashes of stored files, checkpoint file lists, worker hosts
(version, drain)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 22:40:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | Sequence[str] | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add artifacts.sha256/files, datasets.sha256, workers.version and the worker_hosts table."""
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('files', sa.JSON(), nullable=True))
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sha256', sa.String(length=64), nullable=True))
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.String(length=32), nullable=True))
    op.create_table('worker_hosts',
    sa.Column('hostname', sa.String(length=200), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('pools', sa.JSON(), nullable=False),
    sa.Column('devices', sa.JSON(), nullable=False),
    sa.Column('draining', sa.Boolean(), nullable=False),
    sa.Column('drain_deadline', sa.DateTime(), nullable=True),
    sa.Column('registered_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('hostname', name=op.f('pk_worker_hosts'))
    )


def downgrade() -> None:
    """Drop what upgrade() added."""
    op.drop_table('worker_hosts')
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('version')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('sha256')
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_column('files')
        batch_op.drop_column('sha256')
