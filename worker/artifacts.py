"""A worker's side of the artifact store: what a job writes goes up, what it reads comes down through a local
cache keyed by content hash.

A run of a job (one attempt) works in its own local folder, $GENQ_HOME/work/jobs/ID/aN, and uploads under
the key prefix jobs/ID/aN/. A worker that lost its lease can still finish an upload, but only under its own
attempt's prefix, which no database row names once the job moved on (rows are written fenced, after the
upload): its stale files are never read. A resumed run starts from the checkpoint the job's row names.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from genq.core import checkpoint
from genq.core.api import Sample
from genq.core.checkpoint_files import META, STATE, WEIGHTS
from genq.core.errors import DataError
from genq.db import Artifact
from genq.store import ArtifactStore, StoreError, place, sha256_file

log = logging.getLogger("genq.worker")
CHECKPOINT_FILES = (WEIGHTS, STATE, META)  # genq.core.checkpoint's step folder
# The cache's folder is listed (to find what to evict) when what this process added takes it over its bound, and
# at least this often for what other workers of the host added: listing it on every file stored made each job
# slower the longer the worker ran (~600 files listed per upload after 300 small generation jobs).
RESCAN_SECONDS = 60.0


@dataclass(frozen=True)
class Stored:
    """A file as the store holds it."""

    key: str
    size: int
    sha256: str


class ContentCache:
    """Files by sha256 under `root`, at most `max_bytes` in all (the least recently used go first)."""

    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = Path(root), max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._held: int | None = None  # bytes held as of the last listing, plus what this process added since
        self._listed = 0.0  # time.monotonic() of the last listing

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def fetch(self, store: ArtifactStore, key: str, sha256: str | None) -> Path:
        """The cached copy of `key` (downloaded first unless its hash is already here); checks the hash."""
        if sha256 and (hit := self.path(sha256)).is_file():
            os.utime(hit)  # recently used
            return hit
        incoming = self.root / "incoming" / hashlib.sha256(key.encode()).hexdigest()
        found = ""
        for _ in range(2):  # a download damaged on its way is fetched again; a stored file that changed stays wrong
            try:
                store.get(key, incoming)  # resumes incoming.part after a broken download
            except FileNotFoundError:
                raise ArtifactUnusable(f"{key} is not in the artifact store") from None
            found = sha256_file(incoming)
            if not sha256 or found == sha256:
                break
            incoming.unlink(missing_ok=True)
        else:
            raise ArtifactUnusable(f"{key} in the artifact store is damaged: its content hash is {found[:12]}..., "
                                   f"not the {sha256[:12]}... recorded when it was stored")
        target = self.path(found)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(incoming, target)
        self._added(target)
        return target

    def keep(self, path: Path, sha256: str) -> None:
        """Add a local file (just uploaded) to the cache: a hard link, so nothing is copied."""
        target = self.path(sha256)
        if target.exists():
            return
        try:
            place(path, target)
        except OSError as exc:
            log.debug("not cached: %s", exc)
            return
        self._added(target)

    def _added(self, target: Path) -> None:
        if self._held is not None:
            self._held += target.stat().st_size
        if self._held is None or self._held > self.max_bytes or time.monotonic() - self._listed > RESCAN_SECONDS:
            self.evict(keep=target)

    def evict(self, keep: Path | None = None) -> None:
        """Delete the least recently used files until the cache fits its bound."""
        files = [p for p in self.root.glob("??/*") if p.is_file()]
        stats = {p: p.stat() for p in files}
        total = sum(s.st_size for s in stats.values())
        for path in sorted(files, key=lambda p: stats[p].st_mtime):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)  # a job holding a hard link to it keeps its copy
                total -= stats[path].st_size
        self._held, self._listed = total, time.monotonic()


def link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes a copy of `source` (a hard link when possible)."""
    place(source, target)


class JobFiles:
    """One run of one job: its local folder `workdir`, and the store prefix its files go up under."""

    def __init__(self, store: ArtifactStore, workdir: Path, prefix: str, cache: ContentCache | None = None):
        self.store, self.workdir, self.prefix, self.cache = store, Path(workdir), prefix.rstrip("/"), cache

    def key(self, path: Path) -> str:
        return f"{self.prefix}/{Path(path).relative_to(self.workdir).as_posix()}"

    def upload(self, path: Path) -> Stored:
        """Put one file of the workdir in the store (streamed, in chunks)."""
        path = Path(path)
        stored = Stored(self.key(path), path.stat().st_size, sha256_file(path))
        try:
            self.store.put(stored.key, path)
        except OSError as exc:  # the network or the store is gone (requests' and s3fs' errors are OSErrors)
            raise StoreError(f"uploading {stored.key} to {self.store.url} failed: {exc}") from exc
        if self.cache is not None:
            self.cache.keep(path, stored.sha256)
        return stored

    def upload_samples(self, samples: list[Sample]) -> dict[Path, Stored]:
        """Upload the files of `samples`; by their local path."""
        return {s.path: self.upload(s.path) for s in samples if s.path is not None}

    def upload_checkpoint(self, path: Path) -> dict[str, Stored]:
        """Upload a checkpoint's step folder (`path`, or the folder of a file in it); by file name."""
        folder = path if path.is_dir() else path.parent
        return {name: self.upload(folder / name) for name in CHECKPOINT_FILES}

    def forget(self, keys: list[str]) -> None:
        """Delete store files no row names any more (best effort: an orphan costs space, not correctness)."""
        for key in keys:
            try:
                self.store.delete(key)
            except Exception as exc:  # noqa: BLE001
                log.info("could not delete %s from the store: %s", key, exc)

    def clean(self) -> None:
        """Remove the local folder: everything the job keeps is in the store."""
        shutil.rmtree(self.workdir, ignore_errors=True)


class ArtifactUnusable(DataError):
    """A stored file a job needs is missing or damaged: no retry brings it back, so the job fails saying which."""


def checkpoint_keys(artifact: Artifact) -> dict[str, tuple[str, str | None]]:
    """A checkpoint artifact's step folder: file name -> (key, sha256 or None for rows from before hashes)."""
    folder = artifact.path.rsplit("/", 1)[0]
    files = artifact.files or {name: {} for name in CHECKPOINT_FILES}
    return {name: (f"{folder}/{name}", info.get("sha256")) for name, info in files.items()}


def restore_checkpoint(store: ArtifactStore, cache: ContentCache, artifact: Artifact, workdir: Path) -> Path:
    """Bring the checkpoint `artifact` names into workdir/checkpoints/STEP-FOLDER; returns that folder."""
    step_folder = artifact.path.rsplit("/", 2)[-2]
    target = workdir / "checkpoints" / step_folder
    partial = target.with_name(f".{step_folder}.restoring")
    shutil.rmtree(partial, ignore_errors=True)
    for name, (key, sha256) in checkpoint_keys(artifact).items():
        local = store.local_path(key)
        try:
            source = local if local is not None and sha256 is None else cache.fetch(store, key, sha256)
        except ArtifactUnusable as exc:
            raise ArtifactUnusable(f"the checkpoint of job {artifact.job_id} at {step_folder} cannot be read: {exc}; "
                                   "train the model again") from None
        link_or_copy(source, partial / name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)  # whole or not at all: core only loads complete step folders
    return target


@contextmanager
def model_in_use(store: ArtifactStore, cache: ContentCache, artifact: Artifact, models: Path,
                 keep: int) -> Iterator[Path]:
    """restore_model's folder for the block, held in use meanwhile (a shared flock on it): no worker process of
    the host evicts it while a job loads or reads it."""
    for _ in range(10):  # a sibling evicting it each time in between: a host restoring models without pause
        folder = restore_model(store, cache, artifact, models, keep)
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # evicted by a sibling since: restored again
        _lock(fd, fcntl.LOCK_SH)
        if _is_at(fd, folder):
            try:
                yield folder
            finally:
                os.close(fd)
            return
        os.close(fd)  # evicted between the open and the lock
    raise OSError(f"the model folder {folder} was evicted by other workers of this host 10 times in a row")


def restore_model(store: ArtifactStore, cache: ContentCache, artifact: Artifact, models: Path, keep: int) -> Path:
    """A folder under `models` holding the checkpoint `artifact` names, shared by every generation job (and every
    worker process of this host) that uses it: named by the weights' hash, it appears whole or not at all. The
    `keep` folders used last besides it stay; older ones not in use (model_in_use) are removed."""
    name = artifact.sha256 or hashlib.sha256(artifact.path.encode()).hexdigest()
    folder = models / name
    if folder.is_dir() and checkpoint.latest_step(folder) is None:  # half-restored by a genq before staging folders
        _remove_unused(folder)
    if not folder.is_dir():
        # Restored beside it and renamed into place: a sibling worker restoring the same model at the same time
        # would otherwise find a half-restored folder and load no checkpoint from it.
        models.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", dir=models))
        try:
            restore_checkpoint(store, cache, artifact, staging)
            try:
                staging.rename(folder)
            except OSError:
                if not folder.is_dir():  # else a sibling's rename won: its folder holds the same files
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; a failed restore's leftovers
        # keep the folders of the models used last (their files are hard links into the cache, mostly)
        entries = list(models.iterdir())
        older = sorted((p for p in entries if p != folder and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime)
        for stale in older[:max(0, len(older) - keep)]:
            _remove_unused(stale)
        for abandoned in (p for p in entries if p.name.startswith(".") and not _process_alive(p.name)):
            shutil.rmtree(abandoned, ignore_errors=True)
    with suppress(FileNotFoundError):  # evicted by a sibling just now: model_in_use restores it again
        os.utime(folder)
    return folder


def _remove_unused(folder: Path) -> None:
    """Remove model folder `folder` unless a job of this host holds it in use (model_in_use). It is renamed away
    under an exclusive lock first, so a job that opens it meanwhile finds it gone once it gets its lock."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        if not _lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB):
            return  # in use
        if not _is_at(fd, folder):
            return  # a sibling removed it since
        doomed = folder.with_name(f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}")  # a staging folder's name
        os.rename(folder, doomed)
    finally:
        os.close(fd)
    shutil.rmtree(doomed, ignore_errors=True)


def _lock(fd: int, how: int) -> bool:
    """flock(fd, how); False when a non-blocking lock is held elsewhere. A filesystem without flock on folders
    (some network ones) counts as unlocked: eviction then works as it did before locks."""
    try:
        fcntl.flock(fd, how)
    except BlockingIOError:
        return False
    except OSError as exc:
        log.debug("no flock on the models folder (%s): model folders are evicted without it", exc)
    return True


def _is_at(fd: int, folder: Path) -> bool:
    """Whether the open folder `fd` is still the one at path `folder`."""
    try:
        return os.stat(folder).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _process_alive(staging: str) -> bool:
    """Whether the process of this host that a staging folder (.NAME.PID.RANDOM) names still runs."""
    try:
        os.kill(int(staging.split(".")[2]), 0)
    except ProcessLookupError:
        return False
    except (IndexError, ValueError, PermissionError):
        return True  # not a staging folder, or another user's process: leave it alone
    return True
