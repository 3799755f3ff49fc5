"""`gpt`: a nanoGPT-style transformer language model (rotary positions, QK-norm, squared-ReLU MLP)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from genq.core.models._text_params import TextParams, check_text_data, vocab_bound
from genq.core.spec import ModelSpec, check_min_lr


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
    # muon: Muon for the blocks' weight matrices (its updates scaled to AdamW's size, so lr and weight_decay
    # mean the same), AdamW for the embedding/head and norms; adamw: AdamW for everything (nanoGPT's).
    # With nanoGPT's CPU recipe Muon ends 2000 steps at val/loss 1.58 against AdamW's 1.64 (README Quality)
    optimizer: Literal["muon", "adamw"] = "muon"
    # evaluations, samples and checkpoints show an exponential moving average of the weights with this decay
    # (genq.core.ema; 0: the trained weights themselves): with nanoGPT's CPU recipe 0.04-0.06 lower val/loss at
    # step 400
    ema_decay: float = Field(0.95, ge=0, lt=1)
    compile: bool = False  # torch.compile the training step: faster steps on a GPU after a minute of compiling

    @model_validator(mode="after")
    def _params_agree(self) -> GPTParams:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_embd // self.n_head % 2:  # rotary position embeddings turn pairs of channels
            raise ValueError(f"the head size n_embd / n_head ({self.n_embd // self.n_head}) must be even")
        check_min_lr(self.lr, self.min_lr)
        return self


# Attention's scores per layer below which a CPU under bf16 autocast keeps them (attention.cpu_causal_attention);
# above, and on a GPU at any size, flash kernels keep none.
BF16_SCORES_BELOW = 1 << 24


def estimate(p: dict[str, Any]) -> tuple[int, int]:
    """(parameters, activation bytes) of one training step: a bound for a CPU in float32 and a GPU in bf16."""
    V = vocab_bound(p)
    L, d, h, T, B = p["n_layer"], p["n_embd"], p["n_head"], p["block_size"], p["batch_size"]
    params = 12 * L * d * d + V * d  # tied embedding/head; rotary positions have no weights
    # Korthikanti et al.'s 16-bit tally is s b h (34 + 5 a s / h) bytes a layer, twice that in float32; the
    # second term is the attention scores, kept only below BF16_SCORES_BELOW of them. At GPT-2 small's shape,
    # batch 16, block 1024, this comes to 24 GB; an H200 measured 19 GB eager, 13 compiled (bench/gpu_check.sh).
    acts = 2 * L * (34 * B * T * d + 5 * min(B * h * T * T, BF16_SCORES_BELOW)) + 3 * B * T * V * 4
    return params, acts


SPEC = ModelSpec(name="gpt", data="text", params=GPTParams, estimate=estimate,
                 recipe="genq.core.models.gpt.recipe:GPTRecipe", summary=__doc__.split(": ", 1)[1],
                 data_parallel=True, check_data=check_text_data)
