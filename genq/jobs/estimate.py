"""Rough memory estimates for training jobs, so a job that can never fit is refused at submission.

Weights, gradients and the two Adam moments take 16 bytes per fp32 parameter; activations are estimated
from batch, sequence/image size and width (Korthikanti et al. 2022 for transformers, a per-layer tally
for the rest). The aim is the right order of magnitude, not a byte count.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from genq.db.models import Worker
from genq.errors import InvalidInput

BYTES_PER_PARAM = 16  # fp32 weight + grad + Adam exp_avg + exp_avg_sq
FLOAT = 4
OVERHEAD = 128 * 2**20  # allocator slack, framework buffers
DEFAULT_MAX_JOB_MEMORY = 64 * 2**30
CHAR_VOCAB = 256  # a char tokenizer's vocabulary is the corpus' characters: a few hundred at most
AUDIO_CLASSES = 256  # 8-bit mu-law


def _gpt(p: dict[str, Any]) -> tuple[int, int]:
    V = CHAR_VOCAB if p["tokenizer"] == "char" else p["vocab_size"]
    L, d, h, T, B = p["n_layer"], p["n_embd"], p["n_head"], p["block_size"], p["batch_size"]
    params = 12 * L * d * d + V * d  # tied embedding/head; rotary positions have no weights
    # fp16 tally of Korthikanti et al. is s*b*h*(34 + 5*a*s/h) bytes per layer; fp32 doubles it.
    acts = 2 * L * B * T * (34 * d + 5 * h * T) + 3 * B * T * V * FLOAT
    return params, acts


def _gru(p: dict[str, Any]) -> tuple[int, int]:
    V = CHAR_VOCAB if p["tokenizer"] == "char" else p["vocab_size"]
    E, H, L, T, B = p["n_embd"], p["hidden_size"], p["n_layer"], p["block_size"], p["batch_size"]
    params = V * E + 3 * (E * H + H * H + 2 * H) + (L - 1) * 3 * (2 * H * H + 2 * H) + H * V + V
    acts = B * T * (E + 8 * L * H + 3 * V) * FLOAT
    return params, acts


def _conv_pair(p: dict[str, Any], default_size: int = 32) -> tuple[int, int]:
    # Generator/decoder and discriminator/encoder: 4x4 convs with channels c..8c, both directions.
    c, z, B = p["base_channels"], p["z_dim"], p["batch_size"]
    s = p.get("image_size") or default_size
    params = 16 * (84 * c * c + 8 * c * z)
    acts = 2 * 2 * B * s * s * c * 5 * FLOAT  # two nets, forward + backward, ~5 feature maps of s*s*c
    return params, acts


def _wavenet(p: dict[str, Any]) -> tuple[int, int]:
    R, L, B, S = p["residual_channels"], p["n_layers"], p["batch_size"], p["segment_length"]
    params = L * 6 * R * R + 2 * AUDIO_CLASSES * R + R * R
    acts = B * S * (8 * L * R + 3 * AUDIO_CLASSES) * FLOAT
    return params, acts


ESTIMATORS = {"gpt": _gpt, "gru": _gru, "dcgan": _conv_pair, "vae": _conv_pair, "wavenet": _wavenet}


def estimate_train_memory(model: str, params: dict[str, Any], gpus: int = 1) -> int:
    """Bytes one device needs to train `model` with validated `params` (data parallel over `gpus`)."""
    n_params, acts = ESTIMATORS[model](params)
    return n_params * BYTES_PER_PARAM + acts // max(1, gpus) + OVERHEAD


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


def check_fits(session: Session, model: str, params: dict[str, Any], pool: str, gpus: int = 1) -> int:
    """Return the estimate, or raise InvalidInput if it exceeds the largest device in `pool`."""
    need = estimate_train_memory(model, params, gpus)
    limit, where = largest_device_memory(session, pool)
    if need > limit:
        raise InvalidInput(
            f"model '{model}' with these params needs about {human_bytes(need)} of memory to train, "
            f"more than the largest device in pool '{pool}' ({human_bytes(limit)}, {where}); "
            "reduce the model size or batch_size",
            details={"estimated_bytes": need, "limit_bytes": limit},
        )
    return need
