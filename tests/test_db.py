"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, select

from genq.db import Base, Database, Job, JobLog, Output, Team


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


def test_text_with_a_nul_or_a_lone_surrogate_is_stored_with_replacement_characters(database_url):
    """What a byte-level BPE model may sample: PostgreSQL's text refuses a NUL, and no UTF-8 encoder writes a lone
    surrogate. Both databases store U+FFFD for each instead of failing the job that wrote it."""
    db = Database(database_url)
    try:
        with db.session() as s:
            team = Team(name="nul-text")
            s.add(team)
            s.flush()
            job = Job(team_id=team.id, type="generate", model="gpt", params={}, error="x\x00")
            s.add(job)
            s.flush()
            s.add(Output(job_id=job.id, index=0, kind="text", prompt="p\ud800", text="a\x00b\udfffc"))
            s.execute(insert(JobLog.__table__).values(job_id=job.id, message="m\x00"))
            job_id = job.id
        with db.session() as s:
            out = s.scalar(select(Output).where(Output.job_id == job_id))
            assert (out.text, out.prompt) == ("a\ufffdb\ufffdc", "p\ufffd")
            assert s.scalar(select(JobLog.message).where(JobLog.job_id == job_id)) == "m\ufffd"
            assert s.get(Job, job_id).error == "x\ufffd"
    finally:
        db.dispose()
