"""The artifact store: where checkpoints, samples, outputs and uploaded datasets live, chosen by GENQ_ARTIFACTS.

Keys are relative POSIX paths ("jobs/3/a1/checkpoints/step-00000020/model.safetensors"), the same on every
backend and what the database's `path` columns hold:

- LocalStore: a folder (one host, or a disk every host mounts): today's layout.
- FsspecStore: an fsspec URL, e.g. s3://bucket/prefix (AWS variables; GENQ_S3_ENDPOINT_URL for any
  S3-compatible server).
- HttpStore (genq.store_http): http(s)://WEB, through the web server's /api/v1/store with a `worker` token
  (GENQ_TOKEN), for worker hosts that have no store of their own.

A key names a file, never a folder: on every backend a key under which other keys are stored ("jobs") is
not a stored file (size None, open FileNotFoundError, delete leaves it), and put refuses it (Conflict).

Every transfer streams in CHUNK pieces (memory stays flat whatever the file's size) and resumes: a download
continues its `.part` file, an HTTP upload continues from the offset the server already holds.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO

from genq.errors import Conflict, InvalidInput

CHUNK = 8 * 1024 * 1024  # bytes moved per read/write/request: the memory a transfer holds
S3_MIN_PART = 5 * 1024 * 1024  # S3 refuses smaller parts in a multipart upload
MAX_KEY = 500  # the database's path columns
_KEY_PART = re.compile(r"^[A-Za-z0-9_.+=@-]+$")


class StoreError(Exception):
    """The store could not move a file (after retries): the caller treats it like a lost connection."""


class StoreRefused(StoreError):
    """The web server's store refused the request's token (HTTP 401: invalid or revoked; 403: not a worker's)."""

    def __init__(self, request: str, status: int, body: str):
        super().__init__(f"{request}: HTTP {status}: {body}")
        self.request, self.status = request, status


def check_key(key: object) -> str:
    """`key` if it is a clean relative path (letters, digits, `_.+=@-` between slashes), else InvalidInput."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise InvalidInput(f"an artifact key is a relative path of 1-{MAX_KEY} characters")
    parts = key.split("/")
    if any(p in ("", ".", "..") or not _KEY_PART.match(p) for p in parts):
        raise InvalidInput(f"invalid artifact key {key[:100]!r}: use letters, digits and _.+=@- between slashes")
    return key


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_stream(source: BinaryIO, target: BinaryIO, digest=None) -> int:
    """Copy `source` to `target` chunk by chunk (updating `digest` if given); the bytes copied."""
    copied = 0
    while chunk := source.read(CHUNK):
        target.write(chunk)
        if digest is not None:
            digest.update(chunk)
        copied += len(chunk)
    return copied


def place(source: Path, target: Path) -> None:
    """Put a copy of `source` at `target` atomically: a hard link when both are on one file system (no bytes
    move), else a chunked copy into a temp file that replaces `target` once complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        try:
            os.link(source, tmp)
        except OSError:
            with open(source, "rb") as src, open(tmp, "wb") as out:
                copy_stream(src, out)
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class ArtifactStore(ABC):
    """Files by key. put/get move whole files between this host and the store; open streams one."""

    url: str

    @abstractmethod
    def put(self, key: str, source: Path) -> None:
        """Store the file `source` under `key`; readers see the old file or the new one, whole. Conflict when
        `key` names a folder (see folder_conflict)."""

    @abstractmethod
    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """A readable stream of `key` from byte `offset`; FileNotFoundError if there is none."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The size of `key` in bytes, None if it is not stored."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key` (nothing if absent)."""

    def local_path(self, key: str) -> Path | None:
        """The file itself when the store is a folder on this host (read it in place), else None."""
        return None

    def folder_conflict(self, key: str) -> str | None:
        """Why no file can be stored under `key` (other keys are stored under it: it is a folder), else None."""
        return None

    def _refuse_folder(self, key: str) -> None:
        if reason := self.folder_conflict(key):
            raise Conflict(reason)

    def get(self, key: str, target: Path, retries: int = 3) -> None:
        """Copy `key` to `target`, resuming `target.part` after a broken connection (and on the next call)."""
        check_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        total = self.size(key)
        if total is None:
            raise FileNotFoundError(f"artifact {key} is not in the store {self.url}")
        for attempt in range(retries + 1):
            done = part.stat().st_size if part.exists() else 0
            if done > total:  # left by another file once stored under this name
                part.unlink()
                done = 0
            try:
                with open(part, "ab") as out:
                    if done < total:
                        with self.open(key, offset=done) as source:
                            copy_stream(source, out)
                if part.stat().st_size != total:
                    raise StoreError(f"artifact {key}: got {part.stat().st_size} of {total} bytes")
                os.replace(part, target)
                return
            except (OSError, StoreError) as exc:
                if isinstance(exc, FileNotFoundError) or attempt == retries:
                    raise StoreError(f"downloading {key} from {self.url} failed: {exc}") from exc
                time.sleep(0.5 * 2**attempt)


class LocalStore(ArtifactStore):
    """A folder: keys are paths under it."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        """Where `key` lives (never outside the folder: check_key allows no '..')."""
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def folder_conflict(self, key: str) -> str | None:
        target = self.path(key)
        if target.is_dir():
            return f"artifact key {key} names a folder of the store (other keys are stored under it), not a file"
        for parent in reversed(target.relative_to(self.root).parents[:-1]):
            if (self.root / parent).exists() and not (self.root / parent).is_dir():
                return f"artifact key {key} lies under {parent.as_posix()}, which is a stored file, not a folder"
        return None

    def put(self, key: str, source: Path) -> None:
        self._refuse_folder(key)
        target = self.path(key)
        if Path(source).resolve() == target:
            return
        try:
            place(Path(source), target)
        except FileNotFoundError:  # its folder, just made, emptied out and removed by a delete(): make it again
            if not Path(source).is_file():
                raise
            place(Path(source), target)

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        try:
            f = open(self.path(key), "rb")
        except (IsADirectoryError, NotADirectoryError):  # a folder, or a path through a file: no stored file
            raise FileNotFoundError(f"no stored file at artifact key {key}") from None
        f.seek(offset)
        return f

    def size(self, key: str) -> int | None:
        try:
            found = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return found.st_size if stat.S_ISREG(found.st_mode) else None  # a folder is no stored file

    def delete(self, key: str) -> None:
        path = self.path(key)
        if path.is_dir():  # a folder is no stored file: nothing to delete
            return
        try:
            path.unlink(missing_ok=True)
        except NotADirectoryError:
            return
        # the folders it leaves empty go too (a replaced checkpoint's step folder, a deleted job's): rmdir removes
        # only an empty one, and a put() racing to fill one makes it again
        for parent in path.relative_to(self.root).parents[:-1]:  # deepest first, the store's own folder left
            try:
                (self.root / parent).rmdir()
            except FileNotFoundError:  # another delete removed it: its parent may be empty now
                continue
            except OSError:  # not empty: the folders above are not either
                break

    def get(self, key: str, target: Path, retries: int = 3) -> None:
        source = self.path(key)
        if not source.is_file():
            raise FileNotFoundError(f"artifact {key} is not in the store {self.url}")
        target = Path(target)
        if target.resolve() != source:
            place(source, target)
        target.with_name(target.name + ".part").unlink(missing_ok=True)  # a remote store's leftover


class FsspecStore(ArtifactStore):
    """Any fsspec file system by URL (s3://bucket/prefix, memory://x, ...)."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        protocol = url.split("://", 1)[0]
        options: dict = {}
        if protocol in ("s3", "s3a"):
            endpoint = os.environ.get("GENQ_S3_ENDPOINT_URL", "").strip()
            # multipart uploads in CHUNK parts: what an upload holds in memory (S3's minimum part is 5 MiB)
            # completing a multipart upload of a large object may take the server minutes (AWS says so)
            options = {"client_kwargs": {"endpoint_url": endpoint} if endpoint else {}, "skip_instance_cache": True,
                       "config_kwargs": {"read_timeout": 600}}
        self.fs, self.prefix = fsspec.core.url_to_fs(self.url, **options)
        self.prefix = self.prefix.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}"

    def folder_conflict(self, key: str) -> str | None:
        if self.fs.isdir(self._path(key)):
            return f"artifact key {key} names a folder of the store (other keys are stored under it), not a file"
        return None

    def put(self, key: str, source: Path) -> None:
        self._refuse_folder(key)
        # s3fs sends a file above one part as a multipart upload, retrying each part; the object appears
        # whole at the end (or not at all).
        kwargs = {}
        if "s3" in self.fs.protocol:
            # two parts in flight at most: what an upload holds in memory (S3 allows 10,000 parts)
            part = max(CHUNK, S3_MIN_PART, -(-Path(source).stat().st_size // 10_000))
            kwargs = {"chunksize": part, "max_concurrency": 2}
        try:
            self.fs.put_file(str(source), self._path(key), **kwargs)
        except TypeError:  # a file system whose put_file takes no chunksize
            self.fs.put_file(str(source), self._path(key))

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        # One ranged GET per CHUNK: memory stays flat (s3fs' get_file held a whole 1 GiB object in memory in
        # bench/artifacts.py), and a broken download continues from its offset.
        f = self.fs.open(self._path(key), "rb", block_size=CHUNK, cache_type="none")
        if getattr(f, "details", {}).get("type", "file") != "file":  # s3fs opens a prefix as an empty file
            f.close()
            raise FileNotFoundError(f"no stored file at artifact key {key}")
        if offset:
            f.seek(offset)
        return f

    def size(self, key: str) -> int | None:
        try:
            info = self.fs.info(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return int(info["size"]) if info.get("type", "file") == "file" else None  # a prefix is no stored file

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass


def open_store(spec: str, token: str | None = None) -> ArtifactStore:
    """The store GENQ_ARTIFACTS names: a folder, an fsspec URL, or http(s)://WEB (which needs `token`)."""
    if spec.startswith(("http://", "https://")):
        from genq.store_http import HttpStore

        return HttpStore(spec, token)
    if "://" in spec and not spec.startswith("file://"):
        return FsspecStore(spec)
    return LocalStore(Path(spec.removeprefix("file://")))


def staging_file(folder: Path) -> tuple[BinaryIO, Path]:
    """A new temp file under `folder` (created) for a transfer to write into; the caller removes it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder)
    return os.fdopen(fd, "wb"), Path(name)


def remove_tree(path: Path) -> None:
    """Delete a folder if it exists."""
    shutil.rmtree(path, ignore_errors=True)
