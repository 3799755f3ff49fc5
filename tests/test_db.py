"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from genq.db import Base, Database


def test_migrations_match_the_models(database_url):
    db = Database(database_url)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations differ; add a revision: {diff}"
    finally:
        db.dispose()


def test_upgrade_is_idempotent(database_url):
    db = Database(database_url)
    try:
        db.upgrade()  # already at head: nothing to do, no error
    finally:
        db.dispose()
