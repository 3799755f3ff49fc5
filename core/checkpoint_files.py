"""The checkpoints folder on disk (genq.core.checkpoint's layout): step folders written under temporary names and
renamed into place, files and folders fsynced, LATEST replaced atomically, the step folders to try newest first,
and old or abandoned ones removed. Nothing here reads what a checkpoint holds."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path

KEEP = 2  # step folders kept: the newest two
WEIGHTS, STATE, META, LATEST = "model.safetensors", "state.pt", "meta.json", "LATEST"
PREFIX = "step-"
HOST = socket.gethostname().replace("-", "_")


def tmp_name() -> str:
    """A temp name in the checkpoints folder that says which writer made it (for cleaning up after kills)."""
    return f".tmp-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_file(path: Path, data: bytes, replace: Path | None = None) -> None:
    """Write and fsync `path`; then, with `replace`, rename it over that file (atomic)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if replace is not None:
        os.replace(path, replace)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step_of(name: str) -> int | None:
    """The step a folder named step-XXXXXXXX holds; None for any other name."""
    if not name.startswith(PREFIX):
        return None
    try:
        return int(name[len(PREFIX):])
    except ValueError:
        return None


def complete(path: Path) -> bool:
    """Whether a step folder has all three files."""
    return all((path / f).is_file() for f in (WEIGHTS, STATE, META))


def candidates(root: Path) -> list[Path]:
    """Step folders to try, best first: the one LATEST names, then the rest newest first."""
    if not root.is_dir():
        return []
    steps = sorted((p for p in root.iterdir() if step_of(p.name) is not None and p.is_dir()),
                   key=lambda p: step_of(p.name), reverse=True)
    try:
        pointed = root / (root / LATEST).read_text().strip()
    except OSError:
        return steps
    return [pointed] + [p for p in steps if p != pointed] if pointed in steps else steps


def discard(path: Path, root: Path) -> None:
    """Rename out of the step namespace (atomic), then delete: a half-deleted folder is never a candidate."""
    trash = root / f".trash-{uuid.uuid4().hex[:8]}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def prune(root: Path, keep_name: str) -> None:
    """Remove all but the newest KEEP step folders (and `keep_name`), and what killed writers left."""
    steps = sorted((p for p in root.iterdir() if step_of(p.name) is not None),
                   key=lambda p: step_of(p.name))
    keep = {p.name for p in steps[-KEEP:]} | {keep_name}
    for p in steps:
        if p.name not in keep:
            discard(p, root)
    for p in root.iterdir():  # leftovers of killed writers
        if p.name.startswith(".trash-"):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(".tmp-") and _abandoned(p):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _abandoned(tmp: Path) -> bool:
    """A temp entry whose writer is gone: our host and a dead pid, or older than a day."""
    try:
        if time.time() - tmp.stat().st_mtime > 86400:
            return True
    except OSError:
        return False
    parts = tmp.name.split("-")  # .tmp-HOST-PID-HEX
    if len(parts) != 4 or parts[1] != HOST:
        return False
    pid = parts[2]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
