"""Trained models kept loaded between generation jobs in one process, so a stream of small generation jobs
from the same checkpoint reads and builds it once.

An entry is what a recipe's `generation_model(checkpoint, device)` built (networks in eval mode, a
tokenizer), keyed by the model kind, the device, and the checkpoint that load_latest() would load now: its
step folder and the inode, size and modification time of its files. A newer checkpoint (LATEST moved on) or
a folder written again in place is another key, so a stale entry is never returned; it ages out. The least
recently used entries go once there are more than `max_models`, or their weights take more than `max_bytes`.

It lives in the model library, not the worker, because the key is the checkpoint layout's business
(genq.core.checkpoint.identity) and every recipe's generate() goes through it; the process that runs the
jobs only sets the bounds (configure) and empties it when it needs the memory (clear).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from genq.core import checkpoint

T = TypeVar("T")

_lock = threading.Lock()
_entries: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()  # key -> (model, bytes of weights), oldest first
_limits = {"models": 4, "bytes": 2 << 30}


def configure(max_models: int, max_bytes: int) -> None:
    """Keep at most `max_models` models (0: none, every job loads its checkpoint) of at most `max_bytes` weights."""
    with _lock:
        _limits.update(models=max_models, bytes=max_bytes)
        _evict()


def clear() -> None:
    """Drop every loaded model (a training job about to need the device's memory, say)."""
    with _lock:
        _entries.clear()


def get(workdir: Path, kind: str, device: str, build: Callable[[checkpoint.Checkpoint, str], T]) -> T:
    """build(checkpoint, device) for the newest checkpoint of `kind` in `workdir`, built once while it stays
    the newest. `build` must depend on nothing else, and what it returns must not be changed by using it."""
    newest = checkpoint.identity(workdir)
    with _lock:
        if (kind, device, newest) in _entries:
            _entries.move_to_end((kind, device, newest))
            return _entries[kind, device, newest][0]
    ckpt = checkpoint.load_trained(workdir, kind)
    model = build(ckpt, device)
    # Keyed by what was loaded: when the newest folder was unreadable, load_trained fell back to an older one.
    loaded = checkpoint.folder_identity(ckpt.path)
    if loaded is not None:
        # tied weights are one tensor under two names: count it once
        size = sum({t.data_ptr(): t.nbytes for tensors in ckpt.tensors.values() for t in tensors.values()}.values())
        with _lock:
            _entries[kind, device, loaded] = (model, size)
            _evict()
    return model


def keep(key: tuple, build: Callable[[], tuple[T, int]]) -> T:
    """The model of build() -> (model, bytes of its weights), built once while `key` stays among the kept ones: for
    models that are not a job's checkpoint (a pretrained base; its key must change whenever its files do)."""
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            return _entries[key][0]
    model, size = build()
    with _lock:
        _entries[key] = (model, size)
        _evict()
    return model


def _evict() -> None:
    """Drop the least recently used entries beyond the limits (the caller holds the lock)."""
    while _entries and (len(_entries) > _limits["models"]
                        or sum(size for _, size in _entries.values()) > _limits["bytes"]):
        _entries.popitem(last=False)
