"""SQLAlchemy 2.0 typed schema. Times are naive UTC, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, MetaData, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
ROLES = ("admin", "member", "viewer", "worker")  # worker: only the artifact store (web/api/store.py)
WINNERS = ("a", "b", "tie")  # a preference vote's outcome, relative to the stored (canonical) order


# A host's clock may be off; tests fake that with this offset. Leases never read it (genq.db.clock.db_now).
_CLOCK_SKEW = timedelta(seconds=float(os.environ.get("GENQ_CLOCK_SKEW_SECONDS", "0") or 0))


def utcnow() -> datetime:
    """This host's current time as naive UTC (for timestamps shown to people; leases use db_now)."""
    return datetime.now(UTC).replace(tzinfo=None) + _CLOCK_SKEW


def iso(value: datetime | None) -> str | None:
    """Naive UTC datetime -> ISO 8601 with a Z, as the API writes times."""
    return None if value is None else value.isoformat() + "Z"


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class StoredText(TypeDecorator):
    """Text as every database stores it: a NUL (which PostgreSQL's text refuses) or a lone surrogate (which no
    UTF-8 encoder writes) becomes U+FFFD, the replacement character. Generated text may hold either: a byte-level
    BPE model samples any byte, NUL included."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect) -> str | None:
        return value if value is None else _UNSTORABLE.sub("\ufffd", value)


class Base(DeclarativeBase):
    # Named constraints so Alembic migrations behave the same on SQLite and PostgreSQL.
    metadata = MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    weight: Mapped[float] = mapped_column(default=1.0)  # its share of a pool is weight / the busy teams' weights
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    max_gpus: Mapped[int | None]  # quota: devices (CPU slots) held at once; None: no limit
    gpu_hours_per_week: Mapped[float | None]  # quota over the last 7 days; None: no limit
    usage: Mapped[float] = mapped_column(default=0.0)  # GPU-seconds, decayed with GENQ_USAGE_HALF_LIFE_HOURS
    usage_at: Mapped[datetime | None]  # when `usage` was last decayed and added to


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; the token itself is never stored
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings so people can tell tokens apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]  # updated at most once a minute

    team: Mapped[Team] = relationship()


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = {"sqlite_autoincrement": True}  # a deleted dataset's id is never another's (its store keys)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # text, images, audio, prompts
    filename: Mapped[str] = mapped_column(String(255))  # the uploaded name, for display only, never a path
    path: Mapped[str] = mapped_column(String(500))  # relative to the artifact store
    size_bytes: Mapped[int]
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the stored file: names worker-side copies

    team: Mapped[Team] = relationship()


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_pool", "status", "pool"),
                      # each team's queue in scheduling order: the scheduler reads only its head
                      Index("ix_jobs_queue", "status", "pool", "team_id", "priority", "created_at", "id"),
                      Index("ix_jobs_sent", "status", "pool", "dispatched_at"),  # queued and sent: few
                      Index("ix_jobs_accrued_until", "accrued_until"))  # usage still to count: few

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))  # train, generate
    model: Mapped[str] = mapped_column(String(32))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    builtin_dataset: Mapped[str | None] = mapped_column(String(32))
    source_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    base: Mapped[str | None] = mapped_column(String(128))  # a generate job sampling a models-folder model directly
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # validated, defaults filled in
    prompts: Mapped[list[Any] | None]
    priority: Mapped[int] = mapped_column(default=0)
    gpus: Mapped[int] = mapped_column(default=1)
    pool: Mapped[str] = mapped_column(String(64), default="default")

    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(default=0.0)
    step: Mapped[int] = mapped_column(default=0)
    checkpoint_step: Mapped[int | None]
    attempts: Mapped[int] = mapped_column(default=0)  # how many times a worker claimed it
    max_attempts: Mapped[int] = mapped_column(default=3)
    error: Mapped[str | None] = mapped_column(StoredText)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    preemptible: Mapped[bool] = mapped_column(default=True)  # False: never preempted
    preempt_requested: Mapped[bool] = mapped_column(default=False)  # checkpoint, then back to the queue
    preemptions: Mapped[int] = mapped_column(default=0)
    run_started_at: Mapped[datetime | None]  # the current run (attempt) began
    run_start_step: Mapped[int | None]  # the step it began at (its step rate gives the ETA)
    accrued_until: Mapped[datetime | None]  # usage is counted up to here
    gpu_seconds: Mapped[float] = mapped_column(default=0.0)  # devices x seconds held, all runs

    worker_id: Mapped[str | None] = mapped_column(String(200))
    # The GPUs a running job holds on its worker's host, as ",2,0," (CUDA_VISIBLE_DEVICES values, its ranks' in
    # order): set by the claim on a GPU worker, None on a CPU one (genq.worker.runner).
    devices: Mapped[str | None] = mapped_column(String(200))
    dispatched_at: Mapped[datetime | None]  # when the scheduler last sent its message; None: not sent
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # batch generation: rows of the prompts, stored (ok or error) and failed among them, the expected end
    rows_total: Mapped[int | None]
    rows_done: Mapped[int] = mapped_column(default=0, server_default="0")
    rows_failed: Mapped[int] = mapped_column(default=0, server_default="0")
    eta_at: Mapped[datetime | None]
    only_rows: Mapped[list[Any] | None]  # a retry runs only these rows of the prompts (None: all)
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))

    team: Mapped[Team] = relationship()
    dataset: Mapped[Dataset | None] = relationship()


class UsageDay(Base):
    """Device-seconds one job used on one (UTC) day: the record behind /usage and the weekly quota."""

    __tablename__ = "usage_days"
    __table_args__ = (UniqueConstraint("job_id", "day"), Index("ix_usage_days_team_day", "team_id", "day"))

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    day: Mapped[date]
    gpu_seconds: Mapped[float] = mapped_column(default=0.0)


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_job_name_step", "job_id", "name", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int]
    value: Mapped[float]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetricRollup(Base):
    """A block of BASE**level steps of one metric series, summarised (genq.metrics keeps it in step with metrics):
    the min and max finite value and the last point, so a chart of a long series reads blocks, not points."""

    __tablename__ = "metric_rollups"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[int] = mapped_column(primary_key=True)
    block: Mapped[int] = mapped_column(primary_key=True)  # the block's first step is block * BASE**level
    lo: Mapped[float | None]  # None: no finite value in the block
    hi: Mapped[float | None]
    last_step: Mapped[int]
    last_value: Mapped[float | None]  # as logged last at last_step (NaN reads back as None on SQLite)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # checkpoint, sample (final), gallery (at a step), output
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(500))  # relative to the artifact store
    size_bytes: Mapped[int] = mapped_column(default=0)
    media_type: Mapped[str] = mapped_column(String(64), default="application/octet-stream")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the file at `path`
    # A checkpoint's step folder: {file name: {"sha256", "size"}}, all under the folder of `path`
    files: Mapped[dict[str, Any] | None]


class Output(Base):
    __tablename__ = "outputs"
    __table_args__ = (Index("ix_outputs_job_index", "job_id", "index"), Index("ix_outputs_job_step", "job_id", "step"),
                      # a row of a batch generation job is stored once, whichever worker generated it
                      UniqueConstraint("job_id", "row", "index"))

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int]
    prompt: Mapped[str | None] = mapped_column(StoredText)
    kind: Mapped[str] = mapped_column(String(16))  # text, image, audio
    text: Mapped[str | None] = mapped_column(StoredText)
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"))
    step: Mapped[int | None]  # the training step of a gallery sample; None for a job's final outputs
    row: Mapped[int | None]  # the input row (from 0) of a batch generation output
    row_id: Mapped[str | None] = mapped_column(String(200))  # the row's own "id" or "custom_id"
    status: Mapped[str] = mapped_column(String(8), default="ok", server_default="ok")  # ok, error
    error: Mapped[str | None] = mapped_column(StoredText)  # why the row failed, or a note (prompt truncated)


class JobLog(Base):
    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[str] = mapped_column(StoredText)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:random
    hostname: Mapped[str] = mapped_column(String(200))
    pool: Mapped[str] = mapped_column(String(64), default="default")
    slots: Mapped[int] = mapped_column(default=1)
    devices: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="online")  # online, stopped
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[str | None] = mapped_column(String(32))  # genq's version on the worker's host


class WorkerHost(Base):
    """A machine running workers: what it runs and whether it is draining (`genq worker drain HOST`)."""

    __tablename__ = "worker_hosts"

    hostname: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    pools: Mapped[list[Any]] = mapped_column(default=list)
    devices: Mapped[list[Any]] = mapped_column(default=list)
    draining: Mapped[bool] = mapped_column(default=False)  # its workers finish their jobs and take no new ones
    drain_deadline: Mapped[datetime | None]  # database time after which running jobs checkpoint and re-queue
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class Rating(Base):
    """One rater's (token's) 1-5 score of one output; a second rating by the same token replaces the first."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("output_id", "token_id"),
        CheckConstraint("score >= 1 AND score <= 5", name="score_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"))
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    score: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PreferenceVote(Base):
    """One rater's verdict on two outputs of the same prompt: a_output_id < b_output_id, `winner` relative to
    that order; one vote per rater and pair (a repeat replaces it)."""

    __tablename__ = "preference_votes"
    __table_args__ = (
        UniqueConstraint("token_id", "a_output_id", "b_output_id"),
        CheckConstraint("a_output_id < b_output_id", name="canonical_order"),
        CheckConstraint("winner IN ('a', 'b', 'tie')", name="winner"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    a_output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"), index=True)
    b_output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"), index=True)
    winner: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ShownPair(Base):
    """A pair of outputs GET /preferences/next served to a rater: only such pairs take votes, so nobody votes
    on outputs they picked themselves (and so knew the jobs of)."""

    __tablename__ = "shown_pairs"
    __table_args__ = (
        UniqueConstraint("token_id", "a_output_id", "b_output_id"),
        CheckConstraint("a_output_id < b_output_id", name="canonical_order"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    a_output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"), index=True)
    b_output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"), index=True)
    shown_at: Mapped[datetime] = mapped_column(default=utcnow)
