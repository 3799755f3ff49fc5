"""Worker hosts: each registers its name, devices, pools and genq version; the database must be at the schema
this version expects; `genq worker drain HOST` stops a host taking new jobs (its running ones finish, or
checkpoint and re-queue once the drain's timeout passes)."""

from __future__ import annotations

import math
import os
import shutil
import socket
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from genq import __version__ as VERSION
from genq.db import Database, Job, JobLog, Worker, WorkerHost
from genq.db.clock import db_now
from genq.errors import Conflict, InvalidInput, NotFound

MAX_DRAIN_SECONDS = 366 * 24 * 3600  # a drain's timeout: at most a year (omit it to let jobs finish)


class VersionMismatch(Exception):
    """This host's genq and the database disagree on the schema; the message says which to upgrade."""


def schema_heads() -> tuple[set[str], set[str]]:
    """(the head revisions of this genq's migrations, every revision it knows)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from genq.db.session import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    return set(scripts.get_heads()), {rev.revision for rev in scripts.walk_revisions()}


def check_schema(session: Session, hostname: str) -> None:
    """Raise VersionMismatch unless the database is at the schema this genq's migrations end at."""
    heads, known = schema_heads()
    try:
        current = set(session.scalars(text("SELECT version_num FROM alembic_version")))
    except Exception as exc:  # noqa: BLE001 - no table: the database was never migrated
        raise VersionMismatch(f"the database has no genq schema: run `genq db upgrade` ({exc.__class__.__name__})") \
            from None
    if current == heads:
        return
    want = ", ".join(sorted(heads))
    if current - known:
        raise VersionMismatch(
            f"host {hostname} runs genq {VERSION}, whose schema ends at {want}, but the database is at "
            f"{', '.join(sorted(current))}, from a newer genq: upgrade genq on {hostname} to the web server's version")
    raise VersionMismatch(
        f"the database is at schema {', '.join(sorted(current)) or 'none'}, older than genq {VERSION} on host "
        f"{hostname} needs ({want}): upgrade the database with `genq db upgrade` (then restart the web server)")


def register_host(session: Session, hostname: str, pool: str, devices: list[dict]) -> str:
    """Check the schema, then record (or refresh) this host; the status a new worker on it starts in:
    'draining' while the host drains, else 'online'."""
    check_schema(session, hostname)
    now = db_now(session)
    host = session.get(WorkerHost, hostname)
    if host is None:
        host = WorkerHost(hostname=hostname, version=VERSION, pools=[pool], devices=devices, draining=False,
                          registered_at=now, last_seen=now)
        session.add(host)
    else:
        host.version, host.last_seen = VERSION, now
        host.pools = sorted({*host.pools, pool})
        known = {(d.get("kind"), d.get("index"), d.get("name")) for d in host.devices}
        host.devices = [*host.devices, *(d for d in devices if (d.get("kind"), d.get("index"), d.get("name"))
                                         not in known)]
    return "draining" if host.draining else "online"


def check_drain_timeout(timeout_seconds: object) -> float | None:
    """`timeout_seconds` if it is a drain's timeout (None, or a number of seconds from 0 to a year), else
    InvalidInput saying what is allowed: the one rule for the CLI and any other caller of drain_host."""
    if timeout_seconds is None:
        return None
    if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int | float) \
            or not math.isfinite(timeout_seconds) or not 0 <= timeout_seconds <= MAX_DRAIN_SECONDS:
        raise InvalidInput(f"a drain's timeout must be a number of seconds from 0 to {MAX_DRAIN_SECONDS} "
                           f"(omit it to let running jobs finish), not {str(timeout_seconds)[:40]}")
    return float(timeout_seconds)


def drain_host(session: Session, hostname: str, timeout_seconds: float | None) -> WorkerHost:
    """Mark `hostname` draining: its workers take no new job; after `timeout_seconds` (None: never) their
    running jobs checkpoint and go back to the queue."""
    timeout_seconds = check_drain_timeout(timeout_seconds)
    host = session.get(WorkerHost, hostname)
    if host is None:
        raise NotFound(f"no worker host named {hostname!r} ever registered (see the workers page)")
    if host.draining:
        raise Conflict(f"host {hostname} is already draining")
    host.draining = True
    host.drain_deadline = None if timeout_seconds is None else db_now(session) + timedelta(seconds=timeout_seconds)
    session.execute(update(Worker).where(Worker.hostname == hostname, Worker.status == "online")
                    .values(status="draining"))
    return host


def undrain_host(session: Session, hostname: str) -> WorkerHost:
    """Let a drained host take jobs again."""
    host = session.get(WorkerHost, hostname)
    if host is None:
        raise NotFound(f"no worker host named {hostname!r} ever registered")
    host.draining, host.drain_deadline = False, None
    session.execute(update(Worker).where(Worker.hostname == hostname, Worker.status == "draining")
                    .values(status="online"))
    return host


def gone(worker_id: str, hostname: str, me: str) -> bool:
    """Whether worker `worker_id` ("host:pid:random") was a process of `hostname`, this host, that has exited.
    Unsure is False: the pid of another process now (its lease then runs out as it would have)."""
    host, _, rest = worker_id.partition(":")
    pid = rest.partition(":")[0]
    if host != hostname or worker_id == me or not pid.isdigit():
        return False
    if int(pid) == os.getpid():  # a restarted container numbers its processes anew: this pid is no longer its
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def release_gone_workers(session: Session, hostname: str, me: str) -> list[int]:
    """At a worker's start: end now the leases of the running jobs whose worker process on this host has exited
    (killed, or the host restarted), so the scheduler re-queues them at its next tick rather than a lease later,
    and their devices are free for this process; mark those workers offline. Returns the jobs released."""
    now, released = db_now(session), []
    running = session.execute(select(Job.id, Job.worker_id).where(
        Job.status == "running", Job.worker_id.startswith(f"{hostname}:", autoescape=True))).all()
    for job_id, worker in running:
        if gone(worker, hostname, me) and session.execute(
                update(Job).where(Job.id == job_id, Job.worker_id == worker, Job.status == "running",
                                  Job.lease_expires_at > now)
                .values(lease_expires_at=now)).rowcount:
            session.add(JobLog(job_id=job_id, message=f"its worker {worker} has exited: the lease ends now"))
            released.append(job_id)
    listed = session.scalars(select(Worker.id).where(Worker.hostname == hostname, Worker.status != "offline")).all()
    if dead := [w for w in listed if gone(w, hostname, me)]:
        session.execute(update(Worker).where(Worker.id.in_(dead)).values(status="offline"))
    return released


def remove_abandoned_runs(db: Database, work: Path, me: str) -> None:
    """At a worker's start: delete the local folders (under `work`) of runs a killed worker of this host left
    behind, those no live worker of this host runs now (another worker process may share this GENQ_HOME)."""
    runs = [p for p in (work / "jobs").glob("*/a*") if p.parent.name.isdigit() and p.name[1:].isdigit()]
    if not runs:
        return
    host = socket.gethostname()
    with db.session() as s:
        live = {(job_id, attempts) for job_id, attempts, worker in s.execute(
            select(Job.id, Job.attempts, Job.worker_id).where(Job.status == "running"))
            if worker and worker.startswith(f"{host}:") and not gone(worker, host, me)}
    for run in runs:
        if (int(run.parent.name), int(run.name[1:])) not in live:
            shutil.rmtree(run, ignore_errors=True)
