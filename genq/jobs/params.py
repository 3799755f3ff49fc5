"""Typed params for each model and for generation: defaults plus overrides, unknown keys and wrong types refused.

Torch-free on purpose: the web process validates submissions with these classes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genq.errors import InvalidInput


class Params(BaseModel):
    # strict: "four" is not an int and "1" is not a bool; extra keys are refused by name.
    model_config = ConfigDict(extra="forbid", strict=True)


class TrainParams(Params):
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=10)
    max_steps: int = Field(1000, ge=1, le=10_000_000)
    eval_interval: int = Field(100, ge=1)
    eval_iters: int = Field(20, ge=1, le=1000)
    checkpoint_interval: int = Field(100, ge=1)
    seed: int = Field(1337, ge=0)


class TextParams(TrainParams):
    tokenizer: Literal["char", "word", "bpe"] = "char"
    vocab_size: int = Field(2000, ge=16, le=200_000)  # bpe's target size; char and word take the corpus'
    block_size: int = Field(64, ge=2, le=8192)


class GPTParams(TextParams):
    n_layer: int = Field(4, ge=1, le=96)
    n_head: int = Field(4, ge=1, le=128)
    n_embd: int = Field(128, ge=8, le=16384)
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(12, ge=1, le=4096)
    max_steps: int = Field(2000, ge=1, le=10_000_000)
    eval_interval: int = Field(250, ge=1)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr: float | None = Field(None, ge=0)  # default: lr / 10, nanoGPT's cosine schedule
    grad_clip: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTParams:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_embd // self.n_head % 2:  # rotary position embeddings turn pairs of channels
            raise ValueError(f"the head size n_embd / n_head ({self.n_embd // self.n_head}) must be even")
        return self


class GRUParams(TextParams):
    n_embd: int = Field(256, ge=8, le=16384)
    hidden_size: int = Field(512, ge=8, le=16384)
    n_layer: int = Field(1, ge=1, le=16)
    dropout: float = Field(0.0, ge=0, lt=1)
    block_size: int = Field(100, ge=2, le=8192)
    batch_size: int = Field(64, ge=1, le=4096)
    lr: float = Field(2e-3, gt=0, le=10)
    max_steps: int = Field(2000, ge=1, le=10_000_000)
    eval_interval: int = Field(250, ge=1)
    grad_clip: float = Field(1.0, ge=0)


class DCGANParams(TrainParams):
    z_dim: int = Field(64, ge=1, le=4096)
    # none: unconditional; class: a label id; prompt: a short text ("7", "seven", "a handwritten seven")
    conditional: Literal["none", "class", "prompt"] | bool = "none"
    image_size: int | None = Field(None, ge=8, le=256)  # default: the dataset's own (digits: 8, upsampled to 16)
    base_channels: int = Field(32, ge=4, le=1024)  # 32: digits reach ~99% class accuracy in ~2000 CPU steps
    batch_size: int = Field(64, ge=1, le=4096)
    lr: float = Field(2e-4, gt=0, le=10)
    max_steps: int = Field(2000, ge=1, le=10_000_000)
    eval_interval: int = Field(500, ge=1)
    checkpoint_interval: int = Field(500, ge=1)

    @field_validator("conditional")
    @classmethod
    def _normalise(cls, v: str | bool) -> str:
        return {True: "prompt", False: "none"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, v: int | None) -> int | None:
        return _check_power_of_two(v)


class VAEParams(TrainParams):
    z_dim: int = Field(16, ge=1, le=4096)
    image_size: int | None = Field(None, ge=8, le=256)
    base_channels: int = Field(32, ge=4, le=1024)
    beta: float = Field(1.0, ge=0)
    batch_size: int = Field(64, ge=1, le=4096)
    max_steps: int = Field(2000, ge=1, le=10_000_000)
    eval_interval: int = Field(500, ge=1)
    checkpoint_interval: int = Field(500, ge=1)

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, v: int | None) -> int | None:
        return _check_power_of_two(v)


def _check_power_of_two(v: int | None) -> int | None:
    # The image nets halve the side down to 4x4.
    if v is not None and v & (v - 1):
        raise ValueError(f"image_size must be a power of two (8, 16, 32, 64, 128 or 256), got {v}")
    return v


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


class GenerateParams(Params):
    num_samples: int = Field(1, ge=1, le=1000)
    seed: int | None = Field(None, ge=0)
    # text
    max_new_tokens: int = Field(200, ge=1, le=100_000)
    temperature: float = Field(1.0, gt=0, le=100)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    # audio
    seconds: float = Field(1.0, gt=0, le=600)


MODELS: dict[str, type[TrainParams]] = {
    "gpt": GPTParams,
    "gru": GRUParams,
    "dcgan": DCGANParams,
    "vae": VAEParams,
    "wavenet": WaveNetParams,
}
MODEL_DATA = {"gpt": "text", "gru": "text", "dcgan": "images", "vae": "images", "wavenet": "audio"}


def _validate(cls: type[Params], params: object, what: str) -> dict[str, Any]:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{what} must be a JSON object of key/value pairs")
    try:
        return cls.model_validate(params).model_dump()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "params"
            if err["type"] == "extra_forbidden":
                known = ", ".join(sorted(cls.model_fields))
                problems.append(f"unknown param '{key}' (known: {known})")
            else:
                problems.append(f"param '{key}': {err['msg']}")
        raise InvalidInput(f"invalid {what}: " + "; ".join(problems), details=problems) from None


def validate_train_params(model: str, params: object) -> dict[str, Any]:
    """Return the full params for a training job of `model`, or raise InvalidInput naming the bad key."""
    if model not in MODELS:
        raise InvalidInput(f"unknown model '{model}' (known: {', '.join(MODELS)})")
    return _validate(MODELS[model], params, f"params for model '{model}'")


def validate_generate_params(params: object) -> dict[str, Any]:
    """Return the full generation params, or raise InvalidInput naming the bad key."""
    return _validate(GenerateParams, params, "generation params")
