"""Refuse at submission a training job that can never fit: each model's estimate (genq.core.spec) against
the largest device of the pool's online workers."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from genq.core import spec
from genq.core.errors import CoreError
from genq.db.models import Worker
from genq.errors import InvalidInput

DEFAULT_MAX_JOB_MEMORY = 64 * 2**30


def largest_device_memory(session: Session, pool: str) -> tuple[int, str]:
    """The biggest device memory of an online worker in `pool` and where it is; else the configured cap."""
    best, where = 0, ""
    for worker in session.scalars(select(Worker).where(Worker.pool == pool, Worker.status == "online")):
        for device in worker.devices or []:
            size = device.get("memory_bytes") if isinstance(device, dict) else None
            if isinstance(size, int | float) and size > best:
                best, where = int(size), f"{device.get('kind', 'device')} on worker {worker.id}"
    if best:
        return best, where
    cap = os.environ.get("GENQ_MAX_JOB_MEMORY_BYTES", "").strip()
    return (int(cap) if cap.isdigit() else DEFAULT_MAX_JOB_MEMORY), "GENQ_MAX_JOB_MEMORY_BYTES"


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} EiB"


def training_estimate(model: str, params: dict[str, Any]) -> int | None:
    """The bytes a training job with these stored (validated) params was estimated to need at submission;
    None for a model kind or params this version no longer knows."""
    try:
        return spec.get(model).memory_bytes(params)
    except (CoreError, KeyError, TypeError):
        return None


def check_fits(session: Session, model: str, params: dict[str, Any], pool: str) -> int:
    """Return the estimate, or raise InvalidInput if it exceeds the largest device in `pool`."""
    need = spec.get(model).memory_bytes(params)
    limit, where = largest_device_memory(session, pool)
    if need > limit:
        raise InvalidInput(
            f"model '{model}' with these params needs about {human_bytes(need)} of memory to train, "
            f"more than the largest device in pool '{pool}' ({human_bytes(limit)}, {where}); "
            "reduce the model size or batch_size",
            details={"estimated_bytes": need, "limit_bytes": limit},
        )
    return need
