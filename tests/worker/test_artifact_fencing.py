"""Artifact writes are fenced like SQL writes: each run uploads under its own attempt's prefix and the row
naming a checkpoint changes only while the run holds the job; a run that lost the job leaves nothing behind
that anyone reads, and a resumed run restores exactly the checkpoint the row names."""

from __future__ import annotations

import errno
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from sqlalchemy import select

from genq.core import checkpoint
from genq.db import Artifact, Job
from genq.store import LocalStore, sha256_file
from genq.worker import artifacts
from genq.worker.artifacts import ArtifactUnusable, ContentCache, JobFiles, restore_checkpoint, restore_model
from genq.worker.hooks import JobHooks, LeaseLost
from tests.worker.test_scheduler import add_jobs


def fake_checkpoint(workdir, step: int):
    folder = workdir / "checkpoints" / f"step-{step:08d}"
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "state.pt", "meta.json"):
        (folder / name).write_bytes(os.urandom(100) + name.encode())
    return folder


def hooks_for(db, tmp_path, job_id: int, worker: str, attempt: int) -> JobHooks:
    store = LocalStore(tmp_path / "store")
    run = f"jobs/{job_id}/a{attempt}"
    files = JobFiles(store, tmp_path / worker / run, run, ContentCache(tmp_path / worker / "cache", 1 << 30))
    return JobHooks(db, job_id, worker, files, stop_reason=lambda: None, flush_every=float("inf"))


def checkpoint_row(db, job_id: int) -> Artifact | None:
    with db.session() as s:
        return s.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "checkpoint"))


def stored_checkpoints(db, tmp_path, n: int) -> list[Artifact]:
    """The checkpoint rows of `n` running jobs, each with a step-100 checkpoint of its own in the store."""
    rows = []
    for job_id in add_jobs(db, n, status="running", worker_id="w", attempts=1):
        hooks = hooks_for(db, tmp_path, job_id, "w", 1)
        hooks.checkpoint(100, fake_checkpoint(hooks.files.workdir, 100))
        rows.append(checkpoint_row(db, job_id))
    return rows


def test_a_run_that_lost_the_job_cannot_replace_its_checkpoint_and_leaves_no_files(db, tmp_path):
    (job_id,) = add_jobs(db, 1, status="running", worker_id="old", attempts=1)
    old = hooks_for(db, tmp_path, job_id, "old", 1)
    old.checkpoint(100, fake_checkpoint(old.files.workdir, 100))
    first = checkpoint_row(db, job_id)
    assert first.path == f"jobs/{job_id}/a1/checkpoints/step-00000100/model.safetensors"
    # the lease moves to a new run (attempt 2), which stores its own checkpoint
    with db.session() as s:
        s.get(Job, job_id).worker_id, s.get(Job, job_id).attempts = "new", 2
    new = hooks_for(db, tmp_path, job_id, "new", 2)
    new.checkpoint(100, fake_checkpoint(new.files.workdir, 100))
    # the old run, back from a network partition, writes a later checkpoint: refused, and its files are gone
    with pytest.raises(LeaseLost):
        old.checkpoint(200, fake_checkpoint(old.files.workdir, 200))
    row = checkpoint_row(db, job_id)
    assert row.path == f"jobs/{job_id}/a2/checkpoints/step-00000100/model.safetensors"
    stored = sorted(str(p.relative_to(tmp_path / "store")) for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert stored == [f"jobs/{job_id}/a2/checkpoints/step-00000100/{name}"
                      for name in ("meta.json", "model.safetensors", "state.pt")]  # a1's replaced, step 200 removed

    # a third run restores exactly what the row names, checking each file's hash
    target = tmp_path / "third"
    restored = restore_checkpoint(LocalStore(tmp_path / "store"), ContentCache(tmp_path / "c3", 1 << 30), row, target)
    assert restored == target / "checkpoints" / "step-00000100"
    source = new.files.workdir / "checkpoints" / "step-00000100"
    for name in ("model.safetensors", "state.pt", "meta.json"):
        assert (restored / name).read_bytes() == (source / name).read_bytes()
    (tmp_path / "store" / row.path).write_bytes(b"corrupted in the store")
    with pytest.raises(ArtifactUnusable, match=f"the checkpoint of job {job_id} at step-00000100 cannot be read: "
                                               f"{row.path} in the artifact store is damaged: its content hash is"):
        restore_checkpoint(LocalStore(tmp_path / "store"), ContentCache(tmp_path / "c4", 1 << 30), row,
                           tmp_path / "fourth")
    (tmp_path / "store" / row.path).unlink()
    with pytest.raises(ArtifactUnusable, match=f"{row.path} is not in the artifact store; train the model again"):
        restore_checkpoint(LocalStore(tmp_path / "store"), ContentCache(tmp_path / "c5", 1 << 30), row,
                           tmp_path / "fifth")


def test_a_download_damaged_on_its_way_is_fetched_again(tmp_path):
    class Flaky(LocalStore):
        """Delivers the first copy of each key with its first byte flipped."""
        damaged: set[str] = set()

        def get(self, key, target, retries=3):
            super().get(key, target, retries)
            if key not in self.damaged:
                self.damaged.add(key)
                data = target.read_bytes()
                target.unlink()  # a hard link to the stored file: the store's copy stays whole
                target.write_bytes(bytes([data[0] ^ 1]) + data[1:])

    store = Flaky(tmp_path / "store")
    stored = tmp_path / "store" / "jobs" / "1" / "data.txt"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"to be or not to be")
    cached = ContentCache(tmp_path / "cache", 1 << 30).fetch(store, "jobs/1/data.txt", sha256_file(stored))
    assert cached.read_bytes() == b"to be or not to be" and store.damaged == {"jobs/1/data.txt"}


def test_workers_of_one_host_restoring_a_model_at_once_each_get_it_whole(db, tmp_path, monkeypatch):
    (job_id,) = add_jobs(db, 1, status="running", worker_id="w", attempts=1)
    hooks = hooks_for(db, tmp_path, job_id, "w", 1)
    hooks.checkpoint(100, fake_checkpoint(hooks.files.workdir, 100))
    row, store, models = checkpoint_row(db, job_id), LocalStore(tmp_path / "store"), tmp_path / "host" / "models"
    models.mkdir(parents=True)
    (models / ".gone.999999999.x").mkdir()  # a killed worker's staging folder
    (models / f".busy.{os.getpid()}.x").mkdir()  # a live one's
    (models / ".hidden").touch()  # not genq's
    # the sibling worker stops after its first file; this one restores the same model meanwhile
    linked, finish, real = threading.Event(), threading.Event(), artifacts.link_or_copy

    def link_then_wait(source, target):
        real(source, target)
        if threading.current_thread() is not threading.main_thread():
            linked.set()
            finish.wait(10)

    monkeypatch.setattr(artifacts, "link_or_copy", link_then_wait)
    with ThreadPoolExecutor(1) as pool:
        sibling = pool.submit(restore_model, store, ContentCache(tmp_path / "c1", 1 << 30), row, models, 4)
        assert linked.wait(10)
        mine = restore_model(store, ContentCache(tmp_path / "c2", 1 << 30), row, models, 4)
        assert checkpoint.latest_step(mine) == 100
        finish.set()
        assert sibling.result() == mine
    assert checkpoint.latest_step(mine) == 100
    assert sorted(p.name for p in models.iterdir()) == [f".busy.{os.getpid()}.x", ".hidden", mine.name]
    # a folder left half-restored (by a genq before staging folders) is restored again
    (mine / "checkpoints" / "step-00000100" / "state.pt").unlink()
    assert restore_model(store, ContentCache(tmp_path / "c2", 1 << 30), row, models, 4) == mine
    assert checkpoint.latest_step(mine) == 100
    # a restore that fails leaves no staging folder behind
    (tmp_path / "store" / row.path).write_bytes(b"corrupted in the store")
    with pytest.raises(Exception, match="content hash"):
        restore_model(store, ContentCache(tmp_path / "c3", 1 << 30), row, tmp_path / "other", 4)
    assert list((tmp_path / "other").iterdir()) == []


def test_a_starting_worker_removes_the_folders_of_runs_no_worker_of_its_host_runs(db, settings, redis_url):
    import dataclasses
    import socket
    import subprocess

    from genq.worker.hosts import release_gone_workers, remove_abandoned_runs
    from genq.worker.runner import WorkerContext

    exited = subprocess.Popen(["true"])
    exited.wait()  # its pid: one no process has now
    later = datetime(2100, 1, 1)
    live, killed, ended, elsewhere = add_jobs(db, 4, status="running", attempts=2, lease_expires_at=later)
    host = socket.gethostname()
    with db.session() as s:
        s.get(Job, live).worker_id = f"{host}:1:abc"  # a sibling process on this host (pid 1 always runs)
        s.get(Job, killed).worker_id = f"{host}:{exited.pid}:x"
        s.get(Job, elsewhere).worker_id = "another-host:1:def"
    worker = WorkerContext(dataclasses.replace(settings, redis_url=redis_url), "default")
    folders = {(job, attempt): worker.work / "jobs" / str(job) / f"a{attempt}"
               for job in (live, killed, ended, elsewhere) for attempt in (1, 2)}
    for folder in folders.values():
        (folder / "checkpoints").mkdir(parents=True)
    remove_abandoned_runs(worker.db, worker.work, worker.id)
    assert {key for key, folder in folders.items() if folder.exists()} == {(live, 2)}
    with db.session() as s:
        assert release_gone_workers(s, host, worker.id) == [killed]
    with db.session() as s:
        assert s.get(Job, killed).lease_expires_at < later == s.get(Job, live).lease_expires_at
    worker.db.dispose()


def test_a_model_folder_in_use_is_not_evicted_and_one_evicted_before_its_lock_is_restored_again(db, tmp_path,
                                                                                                 monkeypatch):
    rows = stored_checkpoints(db, tmp_path, 3)
    store, models = LocalStore(tmp_path / "store"), tmp_path / "host" / "models"

    def restore(row, keep: int = 0):  # keep 0: restoring a new model evicts every other one not in use
        return restore_model(store, ContentCache(tmp_path / "cache", 1 << 30), row, models, keep)

    with artifacts.model_in_use(store, ContentCache(tmp_path / "cache", 1 << 30), rows[0], models, 0) as used:
        restore(rows[1])  # another worker process of the host, evicting
        assert checkpoint.latest_step(used) == 100
    assert sorted(p.name for p in models.iterdir()) == sorted([used.name, rows[1].sha256])
    third = restore(rows[2])  # nothing in use now
    assert [p.name for p in models.iterdir()] == [third.name]

    # a sibling evicts the folder between its restore and this process' lock on it: it is restored again
    real, calls = artifacts.restore_model, []

    def evicted_at_once(*args):
        calls.append(folder := real(*args))
        if len(calls) == 1:
            artifacts._remove_unused(folder)
        return folder

    monkeypatch.setattr(artifacts, "restore_model", evicted_at_once)
    with artifacts.model_in_use(store, ContentCache(tmp_path / "cache", 1 << 30), rows[0], models, 0) as used:
        assert len(calls) == 2 and checkpoint.latest_step(used) == 100


def test_without_flock_on_the_models_folder_models_are_still_restored_and_evicted(db, tmp_path, monkeypatch):
    rows = stored_checkpoints(db, tmp_path, 2)
    store, models, cache = LocalStore(tmp_path / "store"), tmp_path / "models", ContentCache(tmp_path / "c", 1 << 30)

    def no_flock(fd, how):  # as some network filesystems answer for folders
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(artifacts.fcntl, "flock", no_flock)
    with artifacts.model_in_use(store, cache, rows[0], models, 0) as used:
        assert checkpoint.latest_step(used) == 100
    second = restore_model(store, cache, rows[1], models, 0)
    assert [p.name for p in models.iterdir()] == [second.name]


def test_a_checkpoint_uploaded_where_it_was_written_is_recorded_without_a_second_upload(db, tmp_path, monkeypatch):
    (job_id,) = add_jobs(db, 1, status="running", worker_id="w", attempts=1)
    hooks = hooks_for(db, tmp_path, job_id, "w", 1)
    uploads, real = [], hooks.files.upload_checkpoint
    monkeypatch.setattr(hooks.files, "upload_checkpoint", lambda folder: uploads.append(folder) or real(folder))
    folder = fake_checkpoint(hooks.files.workdir, 100)
    writer = threading.Thread(target=hooks.checkpoint_written, args=(100, folder))  # the checkpoint's writer thread
    writer.start()
    writer.join()
    assert uploads == [folder] and checkpoint_row(db, job_id) is None  # uploaded, not yet recorded
    hooks.checkpoint(100, folder)
    assert uploads == [folder]
    row = checkpoint_row(db, job_id)
    assert row.path == f"jobs/{job_id}/a1/checkpoints/step-00000100/model.safetensors"
    assert (tmp_path / "store" / row.path).read_bytes() == (folder / "model.safetensors").read_bytes()
    hooks.checkpoint(200, fake_checkpoint(hooks.files.workdir, 200))  # not uploaded before: uploaded now
    assert len(uploads) == 2 and checkpoint_row(db, job_id).name == "checkpoint-step-200.safetensors"


def test_a_checkpoint_uploaded_by_its_writer_but_never_recorded_leaves_the_store_when_the_run_ends(db, tmp_path):
    """The run failed between the upload (checkpoint thread) and the record (job thread): no row names it."""
    (job_id,) = add_jobs(db, 1, status="running", worker_id="w", attempts=1)
    hooks = hooks_for(db, tmp_path, job_id, "w", 1)
    hooks.checkpoint(100, fake_checkpoint(hooks.files.workdir, 100))
    hooks.checkpoint_written(200, fake_checkpoint(hooks.files.workdir, 200))
    step_200 = tmp_path / "store" / f"jobs/{job_id}/a1/checkpoints/step-00000200"
    assert sorted(p.name for p in step_200.iterdir()) == ["meta.json", "model.safetensors", "state.pt"]
    hooks.discard()  # what the runner does as a failed run ends
    stored = sorted(str(p.relative_to(tmp_path / "store")) for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert stored == [f"jobs/{job_id}/a1/checkpoints/step-00000100/{name}"
                      for name in ("meta.json", "model.safetensors", "state.pt")]
    assert checkpoint_row(db, job_id).path.endswith("step-00000100/model.safetensors")
