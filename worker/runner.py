"""Runs one job in a worker process: claim the row, call core, record the result.

One WorkerContext per process (engines must not cross a fork). The Celery task calls `current().run(id)`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import traceback
from contextlib import AbstractContextManager
from datetime import timedelta
from functools import cached_property, partial
from pathlib import Path

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, aliased

from genq import __version__ as VERSION
from genq.config import Settings
from genq.core import api as core
from genq.db import Artifact, Database, Dataset, Job, JobLog, Worker, WorkerHost
from genq.db.clock import db_now
from genq.errors import GenqError
from genq.events import Publisher
from genq.store import StoreError, place
from genq.worker import rows
from genq.worker.artifacts import ArtifactUnusable, ContentCache, JobFiles, model_in_use, restore_checkpoint
from genq.worker.devices import detect_devices, device_usage
from genq.worker.heartbeat import Heartbeat
from genq.worker.hooks import JobHooks, LeaseLost, RowCounts, hold
from genq.worker.hosts import register_host, release_gone_workers, remove_abandoned_runs
from genq.worker.outputs import MediaRows, record_outputs, upload_outputs
from genq.worker.retry import TRANSIENT, transient, with_retry
from genq.worker.store_access import store_refusal

log = logging.getLogger("genq.worker")

_context: WorkerContext | None = None
_H = WorkerHost.__table__.c
# Locks the host's row for a claim and reads whether the host drains, as of now: the heartbeat learns of a drain
# only at its next beat, and a claim in between took jobs on a host already drained.
LOCK_HOST = (update(WorkerHost.__table__).where(_H.hostname == bindparam("host")).values(hostname=_H.hostname)
             .returning(_H.draining))


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
        # No liveness round trip per session: its writes retry on a lost connection (worker.retry), and the first
        # error after a database restart replaces every pooled connection.
        self.db = Database(settings.database_url, pre_ping=False)
        self.devices = detect_devices()
        self.device = "cuda" if self.devices[0]["kind"] == "cuda" else "cpu"
        self.heartbeat = Heartbeat(self.db, self.id, settings.lease_seconds, usage=device_usage(self.devices))
        self.events = Publisher(settings.redis_url)
        self.store = settings.store()
        self.cache = ContentCache(settings.home / "cache", settings.cache_bytes)
        self.work = settings.home / "work"  # this host's copies of running jobs' folders
        self.shutting_down = False
        self._woken = False  # whether the job being run woke the scheduler already as it ended
        # Loads the model library (torch) now, not in the first job.
        core.keep_models(settings.model_cache_models, settings.model_cache_bytes)
        core.use_models_folder(settings.models_folder)

    # -- worker lifecycle -------------------------------------------------------------------------------------
    def register(self) -> None:
        """Announce this worker (its pool, slot and devices) and start the heartbeat."""
        def write():
            for attempt in range(3):
                try:
                    with self.db.session() as s:
                        status = register_host(s, socket.gethostname(), self.pool, self.devices)
                        now = db_now(s)
                        s.merge(Worker(id=self.id, hostname=socket.gethostname(), pool=self.pool, slots=1,
                                       version=VERSION, devices=self.devices, status=status, started_at=now,
                                       last_heartbeat=now))
                        return status
                except IntegrityError:  # another worker of this host inserted its row first: update it instead
                    if attempt == 2:
                        raise
        status = with_retry(write, "registering the worker")
        with self.db.session() as s:
            if released := release_gone_workers(s, socket.gethostname(), self.id):
                log.warning("jobs %s: their worker on this host has exited; their leases end now", released)
        remove_abandoned_runs(self.db, self.work, self.id)
        if status == "draining":
            self.heartbeat.draining.set()  # before the first beat: take no job on a draining host
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
        return "shutdown" if self.shutting_down or self.heartbeat.drain_expired.is_set() else None

    # -- one job ----------------------------------------------------------------------------------------------
    @cached_property
    def fits(self):
        """The claim's condition that a job fits on this host now: one of several devices needs that many of the
        host's slots unheld; none other may start on a host where one of several devices runs (its processes
        but one sit idle, holding their slots for it) unless the host has slots to spare (on a GPU, claim() also
        checks that the claimer's own device is not one a running job holds). Only this pool's: another pool's
        processes on the host have slots of their own, as the scheduler counts them."""
        host, other = socket.gethostname(), aliased(Job)  # `other`: the pool's running jobs here, not the one claimed
        mine = select(Worker.id).where(Worker.hostname == host, Worker.pool == self.pool)
        on_host = (other.status == "running") & other.worker_id.in_(mine)
        held = select(func.coalesce(func.sum(other.gpus), 0)).where(on_host).scalar_subquery()
        slots = select(func.coalesce(func.sum(Worker.slots), 0)).where(
            Worker.hostname == host, Worker.pool == self.pool, Worker.status == "online").scalar_subquery()
        gang_here = select(other.id).where(on_host, other.gpus > 1).exists()
        return ((Job.gpus == 1) & ~gang_here) | (held + Job.gpus <= slots)

    @property
    def gpu(self) -> str | None:
        """This process' GPU (its CUDA_VISIBLE_DEVICES value), None on a CPU slot."""
        return self.devices[0]["visible_id"] if self.device == "cuda" else None

    @cached_property
    def _claim(self):
        """The claim's UPDATE, built once on the table (an ORM UPDATE ... RETURNING built at every claim took
        3.7-4.4 ms against 2.0-2.5 for this and loading the row, on SQLite)."""
        j = Job.__table__.c
        now, lease = (bindparam(name, type_=j.started_at.type) for name in ("now", "lease"))
        return (update(Job.__table__)
                .where(j.id == bindparam("job"), j.status == "queued", j.cancel_requested.is_(False), self.fits)
                .values(status="running", worker_id=self.id, attempts=j.attempts + 1, lease_expires_at=lease,
                        started_at=func.coalesce(j.started_at, now), error=None, run_started_at=now,
                        run_start_step=func.coalesce(j.checkpoint_step, 0), accrued_until=now, preempt_requested=False,
                        devices=bindparam("devices", type_=j.devices.type)))

    def claim(self, job_id: int) -> Job | None:
        """Atomically take a queued job that fits on this host: the one UPDATE that decides who runs it, after
        the host's row is locked (claims on one host take turns: two could otherwise both count the same free
        slots or devices). None on a draining host (and the heartbeat's draining flag is raised at once)."""
        def write():
            with self.db.session() as s:
                if s.execute(LOCK_HOST, {"host": socket.gethostname()}).scalar():
                    self.heartbeat.draining.set()  # the next messages are handed back without a claim
                    return None
                devices = None
                if self.gpu is not None:
                    devices = self._devices_for(s, s.scalar(select(Job.gpus).where(Job.id == job_id)) or 1)
                    if devices is None:
                        return None
                now = db_now(s)
                lease = now + timedelta(seconds=self.settings.lease_seconds)
                params = {"job": job_id, "now": now, "lease": lease, "devices": devices}
                if not s.execute(self._claim, params).rowcount:
                    return None
                job = s.get(Job, job_id)  # as claimed: this transaction holds the row
                s.execute(insert(JobLog.__table__).values(  # the table's insert: no unit of work to flush
                    job_id=job_id, message=f"attempt {job.attempts} started on {self.id} ({self.device})"))
                return job
        return with_retry(write, "claiming a job")

    def _devices_for(self, s: Session, gpus: int) -> str | None:
        """The GPUs a job of `gpus` devices would hold if this process claimed it, as Job.devices says them: its
        own, then the lowest of the host's devices in this pool that no running job holds; None if too few are
        free (or its own is held)."""
        host = socket.gethostname()
        held = {d for (row,) in s.execute(select(Job.devices).where(
                    Job.status == "running", Job.devices.is_not(None),
                    Job.worker_id.in_(select(Worker.id).where(Worker.hostname == host))))
                for d in row.strip(",").split(",")}
        pool = {d["visible_id"] for (devices,) in s.execute(select(Worker.devices).where(
                    Worker.hostname == host, Worker.pool == self.pool, Worker.status == "online"))
                for d in devices if d.get("kind") == "cuda"}
        free = sorted(pool - held - {self.gpu}, key=lambda g: (len(g), g))  # "2" before "10"
        if self.gpu in held or len(free) < gpus - 1:
            return None
        return f",{','.join([self.gpu, *free[:gpus - 1]])},"

    def run(self, job_id: int) -> None:
        """Run job `job_id` if this worker can claim it; otherwise it is a duplicate delivery: drop it."""
        self._woken = False
        try:
            self._run(job_id)
        finally:
            if not self._woken:  # the job's end woke it already, with its status events
                self.events.wake_scheduler()  # this slot is free: the scheduler sends the next job now

    def _run(self, job_id: int) -> None:
        if self.shutting_down or self.heartbeat.draining.is_set():
            self._decline(job_id)  # the scheduler sends it to a worker that stays
            return
        job = self.claim(job_id)
        if job is None:
            if self._decline(job_id):
                why = "its host is draining" if self.heartbeat.draining.is_set() else \
                    "does not fit on this host now (its slots are held)"
                log.info("job %s: %s; handed back", job_id, why)
            else:
                log.info("job %s: already claimed, finished or cancelled; message dropped", job_id)
            return
        self.events.status(job.id, job.team_id, "running")
        self.heartbeat.watch(job.id)
        hooks = self.hooks(job)
        try:
            stopped, samples, media = self._execute(job, hooks)
            self._finish(job, hooks, stopped, samples, media)
        except LeaseLost:
            log.warning("job %s: lease lost to another worker; stopped", job_id)
        except core.RankLost as exc:  # its lease expires and the reconciler re-queues it, counting an attempt
            log.error("job %s: a data-parallel rank died; left for the reconciler: %s", job_id, exc)
        except (*TRANSIENT, StoreError) as exc:
            refused = store_refusal(exc)
            if refused is None and isinstance(exc, DBAPIError) and not transient(exc):
                refused = f"the database refused what the job wrote: {exc.orig}"
            if refused is not None:
                # refused credentials or data: no retry helps, and expiring leases would hide why from the job's log
                log.error("job %s failed: %s", job_id, refused)
                hooks.discard()
                self._end(job, hooks, "failed", error=refused, log_line=f"failed: {refused}")
                return
            # The database, the artifact store or a connection is gone: leave the row running; its lease expires
            # and the reconciler puts it back in the queue, from where it resumes at its last stored checkpoint.
            log.error("job %s: transient failure, left for the reconciler: %s", job_id, exc)
        except Exception as exc:  # noqa: BLE001 - any other failure ends the job with its message
            said = isinstance(exc, (core.DataError, GenqError, ValueError))  # a message for the user, not a bug
            message = str(exc) if said else f"{type(exc).__name__}: {exc}"
            log.error("job %s failed: %s", job_id, traceback.format_exc())
            hooks.discard()
            self._end(job, hooks, "failed", error=message or type(exc).__name__,
                      log_line=f"failed: {message}" if said else f"failed: {traceback.format_exc(limit=5)}")
        finally:
            self.heartbeat.watch(None)
            hooks.discard()  # a lost lease or a transient failure may leave a background write running
            hooks.files.clean()

    def _decline(self, job_id: int) -> bool:
        """Hand a dispatched job back unclaimed, so the scheduler sends it again at once; False if it is no
        longer waiting for a worker."""
        def write():
            with self.db.session() as s:
                return bool(s.execute(update(Job).where(Job.id == job_id, Job.status == "queued",
                                                        Job.cancel_requested.is_(False))
                                      .values(dispatched_at=None)).rowcount)
        return with_retry(write, "declining a job")

    def hooks(self, job: Job) -> JobHooks:
        """The hooks through which a run of `job` reports: fenced writes, then live events."""
        return JobHooks(self.db, job.id, self.id, self.files(job), self.stop_reason,
                        publish=partial(self.events.publish, job.id, job.team_id), first_attempt=job.attempts == 1)

    def files(self, job: Job) -> JobFiles:
        """This run's local folder and store prefix, both named by the attempt (see genq.worker.artifacts)."""
        run = f"jobs/{job.id}/a{job.attempts}"
        return JobFiles(self.store, self.work / run, run, self.cache)

    def _checkpoint_row(self, job_id: int) -> Artifact | None:
        with self.db.reading() as s:
            return s.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "checkpoint"))

    def _execute(self, job: Job, hooks: JobHooks) -> tuple[str | None, list[core.Sample], MediaRows | None]:
        """Run the job's model code: (the stop reason, if one ended it early; its samples; an image or audio
        generation job's rows)."""
        workdir = hooks.files.workdir
        if job.type == "train":
            data = self._data_source(job, workdir)
            if (row := self._checkpoint_row(job.id)) is not None:  # resume from what reached the store
                restore_checkpoint(self.store, self.cache, row, workdir)
            result = core.train(job.model, job.params, data, workdir, hooks, self.device, world=job.gpus,
                                gpus=job.devices.strip(",").split(",") if job.devices else ())
            return result.stopped, result.samples, None
        if core.generates_rows(job.model):
            return self._generate_rows(job, hooks), [], None
        media, samples = MediaRows.load(self.settings, self.db, job), []
        if row_params := media.row_params():
            hooks.log(f"per-row params ({', '.join(row_params)}) are for text models: every row of a {job.model} "
                      "job is drawn with the job's params")
        if media.good:
            with self._trained_model(job.source_job_id) as source:
                samples = media.generate(lambda prompts: core.generate(source, prompts, job.params, workdir / "outputs",
                                                                       hooks, self.device))
        return hooks.stop_requested(), samples, media

    def _generate_rows(self, job: Job, hooks: JobHooks) -> str | None:
        """A text generation job, row by row (genq.worker.rows.start): the rows no attempt stored yet, from its
        source job's model or its base, streamed to the database as they finish. The stop reason, if one ended
        it early."""
        good = rows.start(self.settings, self.db, job, hooks, RowCounts)
        if good and job.source_job_id is None:  # a pretrained model of the models folder, sampled directly
            core.generate_rows_from_base(job.model, job.base, good, job.params, hooks, self.device)
        elif good:
            with self._trained_model(job.source_job_id) as source:
                core.generate_rows(source, good, job.params, hooks, self.device)
        return hooks.stop_requested()  # the rows still buffered land with the job's end (_finish), in one commit

    def _trained_model(self, job_id: int) -> AbstractContextManager[Path]:
        """A local folder with the final checkpoint of train job `job_id`, in use for the block: shared by the
        generation jobs that use it (named by the weights' hash, so core's model cache keeps it loaded between
        them), and not evicted meanwhile."""
        row = self._checkpoint_row(job_id)
        if row is None:
            raise core.DataError(f"train job {job_id} left no checkpoint in the artifact store")
        return model_in_use(self.store, self.cache, row, self.work / "models", self.settings.model_cache_models)

    def _data_source(self, job: Job, workdir: Path) -> core.DataSource:
        if job.builtin_dataset:
            kind = core.BUILTIN_DATASETS[job.builtin_dataset]
            return core.DataSource(kind=kind, builtin=job.builtin_dataset)
        with self.db.session() as s:
            dataset = s.get(Dataset, job.dataset_id)
            if dataset is None:
                raise core.DataError(f"dataset {job.dataset_id} no longer exists")
            key, sha256, kind = dataset.path, dataset.sha256, dataset.kind
        local = self.store.local_path(key)
        if local is not None and local.is_file():
            return core.DataSource(kind=kind, path=local)  # a folder store: read in place
        try:
            cached = self.cache.fetch(self.store, key, sha256)
        except ArtifactUnusable as exc:
            raise ArtifactUnusable(f"dataset {job.dataset_id} cannot be read: {exc}; upload it again") from None
        path = workdir / "dataset" / key.rsplit("/", 1)[-1]  # keeps the extension the reader goes by
        place(cached, path)
        return core.DataSource(kind=kind, path=path)

    def _finish(self, job: Job, hooks: JobHooks, stopped: str | None, samples: list[core.Sample],
                media: MediaRows | None = None) -> None:
        if stopped == "lost":
            raise LeaseLost(job.id)
        if stopped in ("shutdown", "preempt"):
            preempted = stopped == "preempt"

            def requeue(s: Session) -> None:
                # Counted in `preemptions` as a preemption is: a hand-back the platform asked for (a preemption,
                # a drain's timeout, a graceful shutdown) is no failure, and the reconciler leaves such attempts
                # out of max_attempts.
                more = {"preempt_requested": False} if preempted else {}
                hold(s, job.id, self.id, status="queued", worker_id=None, dispatched_at=None, lease_expires_at=None,
                     preemptions=Job.preemptions + 1, **more)
                why = ("preempted" if preempted else "worker shutting down" if self.shutting_down
                       else "its host's drain timed out")
                s.add(JobLog(job_id=job.id, message=f"{why}: checkpointed and re-queued"))
            hooks.flush(also=requeue, events=[("status", {"status": "queued"})], what="re-queueing a job", wake=True)
            self._woken = True
            return
        keep = stopped != "cancel" or job.type == "generate"  # a cancelled training job has no final samples
        text_rows = job.type == "generate" and core.generates_rows(job.model)
        error = None
        # A row of this attempt succeeded: so did the job, known without reading the rows back (a tiny job's end
        # took a transaction more for it, bench/dispatch.py). Else the rows still buffered are stored, then read.
        if not stopped and text_rows and not hooks.row_ok():
            hooks.flush()
            error = rows.none_ok(self.db, job.id)
        elif not stopped and media is not None:
            error = media.none_ok()
        status = "cancelled" if stopped == "cancel" else "failed" if error else "succeeded"
        self._end(job, hooks, status, error=error, outputs=samples if keep else None, media=media,
                  row_files=text_rows)

    def _end(self, job: Job, hooks: JobHooks, status: str, error: str | None = None, log_line: str | None = None,
             outputs: list[core.Sample] | None = None, media: MediaRows | None = None, row_files: bool = False) -> None:
        """End the job and record its outputs (and an image or audio generation job's rows: `media`) in one
        fenced transaction with what the hooks still buffer: all of it lands, or none. `row_files`: write a text
        generation job's outputs.jsonl and outputs.csv from its stored rows."""
        outputs = outputs or []
        stored = upload_outputs(hooks.files, outputs, media) if outputs or media else {}

        def end(s: Session) -> None:
            values = dict(status=status, finished_at=db_now(s), lease_expires_at=None, error=error)
            if status == "succeeded":
                values["progress"] = 1.0
            if media is not None:  # every row at once: all of them, or the whole ones a cancel kept
                values["rows_done"], values["rows_failed"] = media.counts(outputs)
            hold(s, job.id, self.id, **values)
            if outputs or media:
                record_outputs(s, job, outputs, stored, media)
            if row_files:
                rows.write_files(s, hooks.files, job.id)
            s.execute(insert(JobLog.__table__).values(job_id=job.id, message=log_line or status))
        events = [("outputs", {"count": len(outputs)})] if outputs else []
        hooks.flush(also=end, events=[*events, ("status", {"status": status})], what=f"marking the job {status}",
                    wake=True)  # before the run's folder is cleaned: the next job is sent meanwhile
        self._woken = True
