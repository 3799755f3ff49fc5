"""How a running job reports back: batched metric and log writes (from a background thread), a lease-renewing
heartbeat, stop requests.

Every write to the job row is fenced on (job id, this worker, status running): a worker whose lease was
taken away can no longer change the job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from genq.core.api import Hooks, RowResult, Sample
from genq.core.data.prompts import PromptRow
from genq.db import Artifact, Database, Job, JobLog, Output, utcnow
from genq.db.clock import db_now
from genq.events import flush_events
from genq.metrics import record_metrics
from genq.worker.artifacts import JobFiles, Stored
from genq.worker.retry import with_retry
from genq.worker.rows import FILES_EVERY, record_rows, write_files

log = logging.getLogger("genq.worker")
ETA_AFTER_ROWS = 50  # a generation job shows an eta once this many rows (or 5% of them) are done
MEDIA_TYPES = {".png": "image/png", ".wav": "audio/wav", ".jsonl": "application/x-ndjson", ".txt": "text/plain",
               ".csv": "text/csv"}


class LeaseLost(Exception):
    """Another worker owns the job now: stop without writing anything more."""


# Built once, on the table (not the ORM entity): building an ORM UPDATE and its cache key at every write took
# 4x the statement's own time (0.44 against 0.10 ms on SQLite, 0.94 against 0.33 on PostgreSQL).
_J = Job.__table__.c
FENCED = update(Job.__table__).where(_J.id == bindparam("fenced_job"), _J.worker_id == bindparam("fenced_holder"),
                                     _J.status == "running")


def fenced(job_id: int, worker_id: str) -> tuple:
    """An UPDATE of job `job_id` that only matches while `worker_id` holds it, and its parameters: add
    .values(...) to the first, pass the second to execute."""
    return FENCED, {"fenced_job": job_id, "fenced_holder": worker_id}


def hold(session: Session, job_id: int, holder: str, /, **values: object) -> None:
    """Set `values` on job `job_id` while worker `holder` holds it, else raise LeaseLost. Run it first in a
    transaction that writes for the job: with no values it sets step to itself, which still matches no row
    once the lease is lost, and locks the row until commit."""
    statement, params = fenced(job_id, holder)
    if session.execute(statement.values(**values or {"step": _J.step}), params).rowcount == 0:
        raise LeaseLost(job_id)


def add_samples(session: Session, job_id: int, samples: list[Sample], stored: dict[Path, Stored],
                artifact_kind: str, step: int | None = None, rows: list[tuple[PromptRow, int]] | None = None) -> None:
    """Output rows for `samples` in the caller's transaction, each file (uploaded already: `stored`) also an
    artifact of `artifact_kind` (named by the file, prefixed with the step for a gallery); with `rows`, the
    samples of a generation job: each sample's prompt row and output index."""
    prefix = "" if step is None else f"step-{step}-"
    for i, sample in enumerate(samples):
        artifact_id = None
        if sample.path is not None:
            up = stored[sample.path]
            artifact = Artifact(job_id=job_id, kind=artifact_kind, name=prefix + sample.path.name,
                                path=up.key, size_bytes=up.size, sha256=up.sha256,
                                media_type=MEDIA_TYPES.get(sample.path.suffix, "application/octet-stream"))
            session.add(artifact)
            session.flush()  # the id the output points to
            artifact_id = artifact.id
        row, index = rows[i] if rows is not None else (None, i)
        session.add(Output(job_id=job_id, step=step, index=index, prompt=sample.prompt, kind=sample.kind,
                           text=sample.text, artifact_id=artifact_id, row=None if row is None else row.row,
                           row_id=None if row is None else row.row_id))


class RowCounts:
    """A batch generation job's rows: stored so far (by every attempt) and what that makes its progress and
    expected end, from the rate of this attempt."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.started, self.start_done = total, done, time.monotonic(), done
        self.files_at = self.started
        self.ok = False  # whether a row of this attempt succeeded

    def files_due(self) -> bool:
        """Whether the output files are due to be written again (every FILES_EVERY seconds)."""
        if time.monotonic() - self.files_at < FILES_EVERY:
            return False
        self.files_at = time.monotonic()
        return True

    def after(self, rows: list[RowResult]) -> dict[str, object]:
        """The job's progress and eta_at once `rows` are stored."""
        self.done += len({r.row for r in rows})
        self.ok = self.ok or any(r.status == "ok" for r in rows)
        measured = self.done - self.start_done
        rate = measured / max(time.monotonic() - self.started, 1e-6)
        left = max(self.total - self.done, 0)
        # none from the first rows: continuous batching finishes its first slots' rows together, well after the
        # start, and one row over those seconds put a 30 s job's end hours away
        enough = measured >= min(ETA_AFTER_ROWS, max(1, (self.total - self.start_done) // 20))
        eta = utcnow() + timedelta(seconds=left / rate) if enough and rate > 0 else None
        return {"progress": min(1.0, self.done / self.total) if self.total else 1.0, "eta_at": eta}


class JobHooks(Hooks):
    """core.api.Hooks writing to the database, at most about once a second (and at every checkpoint)."""

    def __init__(self, db: Database, job_id: int, worker_id: str, files: JobFiles,
                 stop_reason, flush_every: float = 1.0, publish: Callable[..., None] | None = None,
                 first_attempt: bool = False):
        self.db, self.job_id, self.worker_id = db, job_id, worker_id
        self._publish = publish  # (events [(name, data)], wake=False): this job's live events, after each commit
        self.files = files  # this run's folder and store prefix: files go up before the rows naming them
        self._stop_reason = stop_reason  # () -> 'cancel' | 'shutdown' | None, from the worker's heartbeat
        self.flush_every = flush_every
        self._metrics: list[dict] = []
        self._logs: list[dict] = []
        self._step: int | None = None
        self._progress: float | None = None
        self._last_flush = time.monotonic()
        self._rows: list[RowResult] = []
        self.batch: RowCounts | None = None  # set while a batch generation job runs
        self._writing: threading.Thread | None = None  # the background write of _maybe_flush, one at a time
        self._uploaded: dict[int, dict[str, Stored]] = {}  # checkpoints uploaded by checkpoint_written, by step
        self._failed: BaseException | None = None  # what it raised, raised again in the job's thread
        # In a job's first attempt, the metric names flushed so far: the others have no point stored yet
        self._written: set[str] | None = set() if first_attempt else None

    def metrics(self, step: int, values: dict[str, float]) -> None:
        now = utcnow()
        self._metrics += [{"job_id": self.job_id, "name": k, "step": int(step), "value": float(v), "created_at": now}
                          for k, v in values.items()]
        self._step = max(self._step or 0, int(step))
        self._maybe_flush()

    def progress(self, done: int, total: int) -> None:
        self._progress = min(1.0, done / total) if total else 0.0
        self._maybe_flush()

    def log(self, message: str) -> None:
        self._logs.append({"job_id": self.job_id, "message": message, "created_at": utcnow()})
        self._maybe_flush()

    def checkpoint_written(self, step: int, path: Path) -> None:
        """Upload the step folder, in the thread that wrote it (training goes on): checkpoint() records it."""
        self._uploaded[step] = self.files.upload_checkpoint(path)

    def checkpoint(self, step: int, path: Path) -> None:
        """Upload the step folder (unless checkpoint_written did), then point the job's checkpoint row at it
        (fenced); the previous one's files leave the store. Resuming reads what the row names: only checkpoints
        that reached the store count."""
        self.flush()
        stored = self._uploaded.pop(step, None) or self.files.upload_checkpoint(path)
        weights = stored["model.safetensors"]
        replaced: list[str] = []

        def write():
            replaced.clear()
            with self.db.session() as s:
                hold(s, self.job_id, self.worker_id, checkpoint_step=step)
                row = s.scalar(select(Artifact).where(Artifact.job_id == self.job_id, Artifact.kind == "checkpoint"))
                if row is None:
                    row = Artifact(job_id=self.job_id, kind="checkpoint")
                    s.add(row)
                elif row.files and row.path != weights.key:
                    folder_key = row.path.rsplit("/", 1)[0]
                    replaced.extend(f"{folder_key}/{name}" for name in row.files)
                row.name, row.path, row.sha256 = f"checkpoint-step-{step}.safetensors", weights.key, weights.sha256
                row.files = {name: {"sha256": up.sha256, "size": up.size} for name, up in stored.items()}
                row.size_bytes, row.created_at = weights.size, db_now(s)
        try:
            with_retry(write, "recording a checkpoint")
        except LeaseLost:
            self.files.forget([up.key for up in stored.values()])  # nobody will ever read them
            raise
        self.files.forget(replaced)

    def samples(self, step: int, samples: list[Sample]) -> None:
        """Record the gallery of `step` as Output rows carrying the step, files as `gallery` artifacts. A job
        resumed from a checkpoint before `step` draws it again: the new rows replace the old."""
        self._settle()
        stored = self.files.upload_samples(samples)

        def write():
            with self.db.session() as s:
                hold(s, self.job_id, self.worker_id)
                at_step = (Output.job_id == self.job_id, Output.step == step)
                stale = [a for a in s.scalars(select(Output.artifact_id).where(*at_step)) if a is not None]
                s.execute(delete(Output).where(*at_step))
                if stale:
                    s.execute(delete(Artifact).where(Artifact.id.in_(stale)))
                add_samples(s, self.job_id, samples, stored, "gallery", step=step)
        with_retry(write, "recording samples")
        if self._publish is not None:
            self._publish([("outputs", {"count": len(samples), "step": step})])

    def rows(self, results: list[RowResult]) -> None:
        self._rows += results
        self._maybe_flush()

    def stop_requested(self) -> str | None:
        if self._rows:  # the decoder asks often: rows that finished while a long one decodes are stored within
            self._maybe_flush()  # about a second, not when the next row finishes
        return self._stop_reason()

    def _maybe_flush(self) -> None:
        """About once a second, hand what is buffered to a write in a background thread: the job does not wait
        for the database (a commit took ~50 ms on the busy 2-core machine, 2% of a small training job)."""
        self._settle(wait=False)
        if self._writing is None and time.monotonic() - self._last_flush >= self.flush_every:
            self._writing = threading.Thread(target=self._write_in_background, args=(self._take(),),
                                             name=f"job-{self.job_id}-writes", daemon=True)
            self._writing.start()

    def _write_in_background(self, batch: tuple) -> None:
        try:
            self._write(batch)
        except BaseException as exc:  # noqa: BLE001 - raised again in the job's thread by _settle
            self._failed = exc

    def _settle(self, wait: bool = True) -> None:
        """Wait for the background write (or, with wait=False, look whether it is done); raise what it raised."""
        if self._writing is None or (not wait and self._writing.is_alive()):
            return
        self._writing.join()
        self._writing, failed, self._failed = None, self._failed, None
        if failed is not None:
            raise failed

    def flush(self, also: Callable[[Session], None] | None = None, events: Sequence[tuple[str, dict]] = (),
              what: str = "recording metrics", wake: bool = False) -> None:
        """Write buffered metrics, logs, step and progress in one transaction, only while this worker holds the
        job, after any background write; `also(session)` adds its writes to that transaction (the job's end:
        one commit, not two) and `events` are published with the flush's once it commits, with `wake` in the
        same round trip as a wake for the scheduler (the job's slot is free)."""
        self._settle()
        self._write(self._take(), also, events, what, wake)

    def row_ok(self) -> bool:
        """Whether a row of this attempt succeeded, stored or still buffered."""
        return (self.batch is not None and self.batch.ok) or any(r.status == "ok" for r in self._rows)

    def _take(self) -> tuple[list[dict], list[dict], list[RowResult], dict[str, object]]:
        """What is buffered (metrics, logs, rows, job values), the buffers emptied."""
        metrics, logs, rows = self._metrics, self._logs, self._rows
        values = {k: v for k, v in (("step", self._step), ("progress", self._progress)) if v is not None}
        if rows and self.batch is not None:
            values.update(self.batch.after(rows))
        self._metrics, self._logs, self._rows = [], [], []
        self._last_flush = time.monotonic()
        return metrics, logs, rows, values

    def _write(self, batch: tuple, also: Callable[[Session], None] | None = None,
               events: Sequence[tuple[str, dict]] = (), what: str = "recording metrics", wake: bool = False) -> None:
        """One fenced transaction for a _take() batch, then its events."""
        metrics, logs, rows, values = batch
        if not (metrics or logs or values or also or rows):
            return

        names = {m["name"] for m in metrics}
        new = names - self._written if self._written is not None else set()

        def write():
            nonlocal new
            fresh, new = new, set()  # a retry may follow a commit whose answer was lost: it reads what is stored
            with self.db.session() as s:
                hold(s, self.job_id, self.worker_id, **values)  # log lines alone are fenced too
                if rows:
                    record_rows(s, self.job_id, rows)
                    if self.batch is not None and self.batch.files_due():
                        write_files(s, self.files, self.job_id)
                record_metrics(s, metrics, fresh)  # the points and the block summaries charts read
                if logs:
                    s.execute(insert(JobLog), logs)
                if also is not None:
                    also(s)
        with_retry(write, what)
        if self._written is not None:
            self._written |= names
        if rows:
            events = [("outputs", {"count": len(rows), "rows_done": self.batch.done if self.batch else None}),
                      *events]
        if self._publish is not None:
            self._publish([*flush_events(metrics, logs, {k: v for k, v in values.items() if k != "eta_at"}),
                           *events], wake=wake)

    def discard(self) -> None:
        """Forget what is buffered (a failed job ends without it: it may be what failed), once a background
        write has ended (what it raised is the failure's, or a lost lease's: nothing more is written anyway), and
        delete the checkpoints checkpoint_written uploaded that no row came to name."""
        try:
            self._settle()
        except Exception as exc:  # noqa: BLE001
            log.info("job %s: a background write failed as the job ended: %s", self.job_id, exc)
        self._metrics, self._logs, self._step, self._progress, self._rows = [], [], None, None, []
        unrecorded, self._uploaded = self._uploaded, {}
        self.files.forget([up.key for stored in unrecorded.values() for up in stored.values()])
