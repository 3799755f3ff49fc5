"""`hf-causal-lm`: a Hugging Face causal LM of the models folder, fine-tuned on text with its own tokenizer."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from genq.core import base_models
from genq.core.spec import ModelSpec, TrainParams, check_min_lr


class HFCausalLMParams(TrainParams):
    base: str = Field(description="a folder of the models folder, saved with save_pretrained")
    block_size: int = Field(128, ge=2, le=32768)  # at most the model's context window (checked against config.json)
    batch_size: int = Field(8, ge=1, le=4096)
    lr: float = Field(5e-5, gt=0, le=10)  # a fine-tuning rate: the weights start trained
    max_steps: int = Field(200, ge=1, le=10_000_000)
    eval_interval: int = Field(50, ge=1)
    checkpoint_interval: int = Field(50, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    min_lr: float | None = Field(None, ge=0)  # default: lr / 10 at the end of a cosine decay
    grad_clip: float = Field(1.0, ge=0)

    @field_validator("base")
    @classmethod
    def _base_is_a_causal_lm(cls, base: str) -> str:
        base_models.resolve(base)  # ParamError (a ValueError) naming the problem: pydantic reports it on "base"
        return base

    @model_validator(mode="after")
    def _block_fits_the_window(self) -> HFCausalLMParams:
        window = base_models.context_window(_config(self.base))
        if window is not None and self.block_size > window:
            raise ValueError(f"block_size ({self.block_size}) exceeds the context window of base "
                             f"'{self.base}' ({window} tokens)")
        check_min_lr(self.lr, self.min_lr)
        return self


def _config(base: str) -> dict[str, Any]:
    return base_models.read_config(base_models.resolve(base), base)


def estimate(p: dict[str, Any]) -> tuple[int, int]:
    """(parameters, activation bytes) of one training step, from the base's config.json."""
    config = _config(p["base"])
    params = base_models.parameter_count(base_models.resolve(p["base"]), config)
    s = base_models.shape(config)
    L, d, h, T, B, V = s["layers"], s["width"], s["heads"], p["block_size"], p["batch_size"], s["vocab"]
    # Korthikanti et al.'s s*b*h*(34 + 5*a*s/h) bytes per layer in fp16, doubled for fp32; logits and their grad.
    acts = 2 * L * B * T * (34 * d + 5 * h * T) + 3 * B * T * V * 4
    return params, acts


SPEC = ModelSpec(name="hf-causal-lm", data="text", params=HFCausalLMParams, estimate=estimate,
                 recipe="genq.core.models.hf_causal_lm.recipe:HFCausalLMRecipe", pretrained=True,
                 summary=__doc__.split(": ", 1)[1])
