"""Runs one job in a worker process: claim the row, call core, record the result.

One WorkerContext per process (engines must not cross a fork). The Celery task calls `current().run(id)`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import traceback
from datetime import timedelta
from functools import partial
from pathlib import Path

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from genq.config import Settings
from genq.core import api as core
from genq.db import Artifact, Database, Dataset, Job, JobLog, Worker, utcnow
from genq.errors import GenqError
from genq.events import Publisher
from genq.worker import rows
from genq.worker.devices import detect_devices, device_usage
from genq.worker.heartbeat import Heartbeat
from genq.worker.hooks import MEDIA_TYPES, JobHooks, LeaseLost, RowCounts, add_samples, hold
from genq.worker.retry import TRANSIENT, with_retry

log = logging.getLogger("genq.worker")

_context: WorkerContext | None = None


def current() -> WorkerContext:
    """This process' worker context, created on first use."""
    global _context
    if _context is None or _context.pid != os.getpid():
        _context = WorkerContext(Settings.from_env(), pool=os.environ.get("GENQ_POOL", "default"))
    return _context


class WorkerContext:
    def __init__(self, settings: Settings, pool: str):
        self.settings, self.pool, self.pid = settings, pool, os.getpid()
        self.id = f"{socket.gethostname()}:{self.pid}:{secrets.token_hex(3)}"
        self.db = Database(settings.database_url)
        self.devices = detect_devices()
        self.device = "cuda" if self.devices[0]["kind"] == "cuda" else "cpu"
        self.heartbeat = Heartbeat(self.db, self.id, settings.lease_seconds, usage=device_usage(self.devices))
        self.events = Publisher(settings.redis_url)
        self.shutting_down = False
        # Loads the model library (torch) now, not in the first job.
        core.keep_models(settings.model_cache_models, settings.model_cache_bytes)
        core.use_models_folder(settings.models_folder)

    # -- worker lifecycle -------------------------------------------------------------------------------------
    def register(self) -> None:
        """Announce this worker (its pool, slot and devices) and start the heartbeat."""
        def write():
            with self.db.session() as s:
                s.merge(Worker(id=self.id, hostname=socket.gethostname(), pool=self.pool, slots=1,
                               devices=self.devices, status="online", started_at=utcnow(), last_heartbeat=utcnow()))
        with_retry(write, "registering the worker")
        self.heartbeat.start()
        self.events.wake_scheduler()  # a new slot: the scheduler need not wait for its tick to fill it
        log.info("worker %s online in pool %s on %s", self.id, self.pool, self.device)

    def request_shutdown(self) -> None:
        """SIGTERM/SIGINT: the running job checkpoints and goes back to the queue; no new job starts."""
        self.shutting_down = True

    def deregister(self) -> None:
        self.heartbeat.stop()
        try:
            with self.db.session() as s:
                s.execute(update(Worker).where(Worker.id == self.id).values(status="stopped"))
        except TRANSIENT:
            pass

    def stop_reason(self) -> str | None:
        if self.heartbeat.lost.is_set():
            return "lost"
        if self.heartbeat.cancel.is_set():
            return "cancel"
        if self.heartbeat.preempt.is_set():
            return "preempt"
        return "shutdown" if self.shutting_down else None

    # -- one job ----------------------------------------------------------------------------------------------
    def claim(self, job_id: int) -> Job | None:
        """Atomically take a queued job: the one UPDATE that decides who runs it."""
        now = utcnow()

        def write():
            with self.db.session() as s:
                claimed = s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
                    .values(status="running", worker_id=self.id, attempts=Job.attempts + 1,
                            lease_expires_at=now + timedelta(seconds=self.settings.lease_seconds),
                            started_at=func.coalesce(Job.started_at, now), error=None,
                            run_started_at=now, run_start_step=func.coalesce(Job.checkpoint_step, 0),
                            accrued_until=now, preempt_requested=False)
                ).rowcount
                if not claimed:
                    return None
                job = s.get(Job, job_id)
                s.add(JobLog(job_id=job_id, message=f"attempt {job.attempts} started on {self.id} ({self.device})"))
                return job
        return with_retry(write, "claiming a job")

    def run(self, job_id: int) -> None:
        """Run job `job_id` if this worker can claim it; otherwise it is a duplicate delivery: drop it."""
        try:
            self._run(job_id)
        finally:
            self.events.wake_scheduler()  # this slot is free: the scheduler sends the next job now

    def _run(self, job_id: int) -> None:
        if self.shutting_down:
            return  # the reconciler re-sends it to a worker that stays
        job = self.claim(job_id)
        if job is None:
            log.info("job %s: already claimed, finished or cancelled; message dropped", job_id)
            return
        self.events.status(job.id, job.team_id, "running")
        self.heartbeat.watch(job.id)
        hooks = self.hooks(job)
        try:
            stopped, samples = self._execute(job, hooks)
            self._finish(job, hooks, stopped, samples)
        except LeaseLost:
            log.warning("job %s: lease lost to another worker; stopped", job_id)
        except TRANSIENT as exc:
            # The database or a connection is gone: leave the row running; its lease expires and the
            # reconciler puts it back in the queue, from where it resumes at its last checkpoint.
            log.error("job %s: transient failure, left for the reconciler: %s", job_id, exc)
        except Exception as exc:  # noqa: BLE001 - any other failure ends the job with its message
            message = str(exc) if isinstance(exc, (core.DataError, GenqError, ValueError)) \
                else f"{type(exc).__name__}: {exc}"
            log.error("job %s failed: %s", job_id, traceback.format_exc())
            hooks.discard()
            self._end(job, hooks, "failed", error=message or type(exc).__name__,
                      log_line=f"failed: {traceback.format_exc(limit=5)}")
        finally:
            self.heartbeat.watch(None)

    def hooks(self, job: Job) -> JobHooks:
        """The hooks through which a run of `job` reports: fenced writes, then live events."""
        return JobHooks(self.db, job.id, self.id, self.settings.artifacts, self.stop_reason,
                        publish=partial(self.events.publish, job.id, job.team_id))

    def _workdir(self, job_id: int) -> Path:
        """A job's folder in the artifact store: checkpoints, samples, outputs."""
        return self.settings.artifacts / "jobs" / str(job_id)

    def _execute(self, job: Job, hooks: JobHooks) -> tuple[str | None, list[core.Sample]]:
        workdir = self._workdir(job.id)
        if job.type == "train":
            result = core.train(job.model, job.params, self._data_source(job), workdir, hooks, self.device)
            return result.stopped, result.samples
        prompts = job.prompts or [None]
        if job.source_job_id is None and job.base:  # a pretrained model of the models folder, sampled directly
            samples = core.generate_from_base(job.model, job.base, prompts, job.params, workdir / "outputs", hooks,
                                              self.device)
            return hooks.stop_requested(), samples
        source = self._workdir(job.source_job_id)
        if core.generates_rows(job.model):
            return self._generate_rows(job, hooks, source), []
        samples = core.generate(source, prompts, job.params, workdir / "outputs", hooks, self.device)
        return hooks.stop_requested(), samples

    def _generate_rows(self, job: Job, hooks: JobHooks, source: Path) -> str | None:
        """A text generation job, row by row: the rows no attempt stored yet, streamed to the database as they
        finish (bad rows first, as error rows). The stop reason, if one ended it early."""
        with self.db.session() as s:
            all_rows = rows.prompt_rows(self.settings, s, job)
        done = rows.stored_rows(self.db, job.id)
        todo = [r for r in all_rows if r.row not in done]
        hooks.batch = RowCounts(total=len(all_rows), done=len(done))
        if done:
            hooks.log(f"resuming: {len(done)} of {len(all_rows)} rows already stored")
        hooks.rows(rows.error_results(todo, job.params.get("num_samples", 1)))
        good = [r for r in todo if r.error is None]
        if good:
            core.generate_rows(source, good, job.params, hooks, self.device)
        hooks.flush()
        return hooks.stop_requested()

    def _data_source(self, job: Job) -> core.DataSource:
        if job.builtin_dataset:
            kind = core.BUILTIN_DATASETS[job.builtin_dataset]
            return core.DataSource(kind=kind, builtin=job.builtin_dataset)
        with self.db.session() as s:
            dataset = s.get(Dataset, job.dataset_id)
            if dataset is None:
                raise core.DataError(f"dataset {job.dataset_id} no longer exists")
            return core.DataSource(kind=dataset.kind, path=self.settings.artifacts / dataset.path)

    def _finish(self, job: Job, hooks: JobHooks, stopped: str | None, samples: list[core.Sample]) -> None:
        if stopped == "lost":
            raise LeaseLost(job.id)
        if stopped in ("shutdown", "preempt"):
            preempted = stopped == "preempt"

            def requeue(s: Session) -> None:
                more = {"preemptions": Job.preemptions + 1, "preempt_requested": False} if preempted else {}
                hold(s, job.id, self.id, status="queued", worker_id=None, dispatched_at=None, lease_expires_at=None,
                     **more)
                s.add(JobLog(job_id=job.id, message="preempted: checkpointed and re-queued" if preempted
                             else "worker shutting down: checkpointed and re-queued"))
            hooks.flush(also=requeue, events=[("status", {"status": "queued"})], what="re-queueing a job")
            return
        keep = stopped != "cancel" or job.type == "generate"  # a cancelled training job has no final samples
        self._end(job, hooks, "cancelled" if stopped == "cancel" else "succeeded", outputs=samples if keep else None)

    def _record_outputs(self, s: Session, job: Job, samples: list[core.Sample]) -> None:
        """Output rows (and artifacts for files) for `samples`, in the caller's transaction; a generation job's
        also as outputs.jsonl."""
        root = self.settings.artifacts
        add_samples(s, job.id, samples, root, "output" if job.type == "generate" else "sample")
        if job.type == "generate" and samples:
            lines = [{"index": index, "prompt": sample.prompt, "kind": sample.kind, "text": sample.text,
                      "file": sample.path.name if sample.path else None} for index, sample in enumerate(samples)]
            batch = self._workdir(job.id) / "outputs.jsonl"
            batch.parent.mkdir(parents=True, exist_ok=True)
            batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
            s.add(Artifact(job_id=job.id, kind="output", name="outputs.jsonl",
                           path=str(batch.relative_to(root)), size_bytes=batch.stat().st_size,
                           media_type=MEDIA_TYPES[".jsonl"]))

    def _end(self, job: Job, hooks: JobHooks, status: str, error: str | None = None, log_line: str | None = None,
             outputs: list[core.Sample] | None = None) -> None:
        """End the job and record its outputs in one fenced transaction with what the hooks still buffer: all of
        it lands, or none."""
        def end(s: Session) -> None:
            values = dict(status=status, finished_at=utcnow(), lease_expires_at=None, error=error)
            if status == "succeeded":
                values["progress"] = 1.0
            hold(s, job.id, self.id, **values)
            if outputs is not None:
                self._record_outputs(s, job, outputs)
            if job.type == "generate" and status != "failed" and core.generates_rows(job.model):
                rows.write_files(s, self.settings.artifacts, job.id)
            s.add(JobLog(job_id=job.id, message=log_line or status))
        events = [("outputs", {"count": len(outputs)})] if outputs else []
        hooks.flush(also=end, events=[*events, ("status", {"status": status})], what=f"marking the job {status}")
