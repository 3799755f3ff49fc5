"""dataset ids never reused: SQLite's AUTOINCREMENT on datasets (a deleted dataset's id would go to the next upload)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 09:30:00

"""
from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | Sequence[str] | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _recreate(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":  # PostgreSQL's sequences never hand an id out twice
        return
    with op.batch_alter_table('datasets', recreate='always', table_kwargs={'sqlite_autoincrement': autoincrement}):
        pass


def upgrade() -> None:
    """Rebuild datasets with AUTOINCREMENT (SQLite only)."""
    _recreate(True)


def downgrade() -> None:
    """Rebuild datasets without it."""
    _recreate(False)
