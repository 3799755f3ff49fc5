"""`wavenet`: causal dilated convolutions over mu-law audio, optionally conditioned on the clip's label."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from genq.core.errors import DataError
from genq.core.spec import FLOAT, ModelSpec, TrainParams

AUDIO_CLASSES = 256  # 8-bit mu-law


class WaveNetParams(TrainParams):
    n_layers: int = Field(10, ge=1, le=64)  # dilations 1, 2, 4, ... repeated every 10 layers
    residual_channels: int = Field(32, ge=4, le=1024)
    sample_rate: int = Field(8000, ge=1000, le=48000)
    segment_length: int = Field(1024, ge=64, le=1_000_000)  # samples per training example (CPU-sized)
    conditional: bool = False  # condition on the clip's label (a tone, a folder name)
    batch_size: int = Field(8, ge=1, le=4096)
    lr: float = Field(2e-3, gt=0, le=10)
    max_steps: int = Field(1000, ge=1, le=10_000_000)  # tones: every clip on pitch by ~500 steps
    eval_interval: int = Field(500, ge=1)
    checkpoint_interval: int = Field(250, ge=1)


def estimate(p: dict[str, Any]) -> tuple[int, int]:
    """(parameters, activation bytes) of one training step."""
    R, L, B, S = p["residual_channels"], p["n_layers"], p["batch_size"], p["segment_length"]
    params = L * 6 * R * R + 2 * AUDIO_CLASSES * R + R * R
    acts = B * S * (8 * L * R + 3 * AUDIO_CLASSES) * FLOAT
    return params, acts


NEEDS_LABELS = "a conditional wavenet needs labelled audio: put the WAV files in one sub-folder per label"


def check_data(p: dict[str, Any], info: dict[str, Any]) -> None:
    """Refuse unlabelled audio for a conditional wavenet."""
    if p["conditional"] and not info.get("classes"):
        raise DataError(NEEDS_LABELS)


SPEC = ModelSpec(name="wavenet", data="audio", params=WaveNetParams, estimate=estimate,
                 recipe="genq.core.models.wavenet.recipe:WaveNetRecipe", summary=__doc__.split(": ", 1)[1],
                 check_data=check_data)
