"""The worker's heartbeat thread: renews the worker row and its job's lease, notices cancels and lost leases."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update

from genq.db import Database, Job, Worker, WorkerHost
from genq.db.clock import db_now
from genq.worker.hooks import fenced

log = logging.getLogger("genq.worker")


class Heartbeat(threading.Thread):
    """Renews this worker's row and its job's lease (in database time); notices cancel requests, lost leases and
    a drain of its host."""

    def __init__(self, db: Database, worker_id: str, lease_seconds: float,
                 usage: Callable[[], list[dict]] | None = None):
        super().__init__(name="genq-heartbeat", daemon=True)
        self.db, self.worker_id, self.lease = db, worker_id, lease_seconds
        self.usage = usage  # the devices with their utilisation now (GPU workers with NVML), for /metrics
        self.interval = min(2.0, lease_seconds / 3)
        self.job_id: int | None = None
        self.cancel = threading.Event()
        self.preempt = threading.Event()  # the scheduler wants the slot back: checkpoint and re-queue
        self.lost = threading.Event()
        self.draining = threading.Event()  # `genq worker drain` named this host: take no new job
        self.drain_expired = threading.Event()  # ...and its timeout passed: checkpoint and re-queue the running one
        self.hostname = socket.gethostname()
        self._stopped = threading.Event()
        # Counts watch() calls: a beat raises a flag only if no watch() came between its read and its answer,
        # so what a beat learned about one run of a job never lands on the next (or on the same job run again).
        self._watching = 0
        self._lock = threading.Lock()

    def watch(self, job_id: int | None) -> None:
        """Start (or, with None, stop) renewing the lease of `job_id`."""
        with self._lock:
            self.cancel.clear()
            self.preempt.clear()
            self.lost.clear()
            self.job_id = job_id
            self._watching += 1

    def beat(self) -> None:
        """One renewal: the worker row, then the job's lease, reading its cancel flag."""
        with self._lock:
            job_id, watching = self.job_id, self._watching
        worker = {}
        if self.usage is not None:
            try:
                worker["devices"] = self.usage()
            except Exception as exc:  # noqa: BLE001 - a failed reading must not stop the lease renewal
                log.debug("reading device utilisation failed: %s", exc)
        with self.db.session() as s:
            now = db_now(s)
            host = s.get(WorkerHost, self.hostname)
            draining = host is not None and host.draining
            if draining:
                self.draining.set()
                if host.drain_deadline is not None and now >= host.drain_deadline:
                    self.drain_expired.set()
            else:
                self.draining.clear()
                self.drain_expired.clear()
            s.execute(update(Worker).where(Worker.id == self.worker_id)
                      .values(last_heartbeat=now, status="draining" if draining else "online", **worker))
            if job_id is None:
                return
            statement, params = fenced(job_id, self.worker_id)
            renewed = s.execute(statement.values(lease_expires_at=now + timedelta(seconds=self.lease))
                                .returning(Job.cancel_requested, Job.preempt_requested), params).first()
        with self._lock:
            if watching != self._watching:
                return  # the job this beat was for ended meanwhile: its answer says nothing about the next one
            if renewed is None:
                self.lost.set()
            elif renewed[0]:
                self.cancel.set()
            elif renewed[1]:
                self.preempt.set()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - the database may be restarting; the lease covers the gap
                log.warning("heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
