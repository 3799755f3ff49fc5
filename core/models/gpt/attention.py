"""Causal self-attention's kernels for the GPT (genq.core.models.gpt.net): PyTorch's fused kernels on a GPU; on a
CPU, the flash kernel or two matrix products around a softmax, whichever the dtype, the size and the CPU favour."""

from __future__ import annotations

import functools
import math
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from genq.core.models.gpt import BF16_SCORES_BELOW

# Attention's kernels on a GPU outside training (evaluation, sampling): not cuDNN's, which builds a plan for each new
# shape, and decoding with a cache has a new key length every token: on an H200, sample.generate took 72 ms a token
# at GPT-2 small's shape, batch 64, of which its kernels ran 1 ms; without it, 8,872 tokens/s against 1,076
# (bench/gpu_check.sh, 64 rows x 256 tokens). Training's shapes are fixed: it keeps every kernel.
INFERENCE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool,
              dropout_p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs)) v for (B, nh, T, hs) heads, in PyTorch's fused kernels (flash on a GPU, in bf16
    under autocast; not cuDNN's outside training). On a CPU in float32 (the bf16 flash kernel's backward takes
    3-6x as long), except causal attention with few enough scores: two matrix products around a softmax
    (cpu_causal_attention), in bf16 under bf16 autocast, and in float32 while training where this CPU runs them
    faster (_products_faster)."""
    if q.device.type != "cpu":
        with nullcontext() if torch.is_grad_enabled() else sdpa_kernel(INFERENCE_BACKENDS):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p)
    bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    scores = q.shape[:-1].numel() * k.size(-2)
    if causal and (scores < BF16_SCORES_BELOW if bf16 else _float32_products(q, k.size(-2), scores)):
        return cpu_causal_attention(q, k, v, dropout_p, torch.bfloat16 if bf16 else torch.float32)
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal,
                                              dropout_p=dropout_p)


# Below BF16_SCORES_BELOW scores per layer (batch x heads x T x T; defined beside the memory estimate that counts
# them), causal attention on a CPU under bf16 autocast is two bf16 matrix products around a softmax: forward and
# backward, 2.9x faster than the float32 flash kernel at 6/6/384, block 256, batch 16 (14 against 41 ms a layer on
# an AMD EPYC with AVX-512 BF16) and 2.3x at the CPU recipe's shape. Its memory grows with T^2 (the scores and
# probabilities, kept for the backward); above the bound, flash's does not. In float32 which is faster, forward
# and backward, depends on the CPU: on one AMD EPYC with AVX2 (2 threads) the products took 1.34 against 1.96 ms a
# layer at the CPU recipe's shape (196,608 scores) and 14.6 against 18.0 ms at 16 x 6 heads x T 128 (1.6M), on
# another (Zen 2) 1.81 against 1.48 and 17.4 against 16.9 ms; flash won at 6/6/384, block 256, batch 16 (6.3M) on
# both. So below FLOAT32_SCORES_BELOW training times both once per shape (_products_faster). Outside autograd
# (evaluation, a prompt's reading) float32 goes to the flash kernel at any size: the forward alone took 2.2
# against 4.4 ms a layer at an evaluation pass of the CPU recipe (64 rows of 64 tokens) on the Zen 2 EPYC.
FLOAT32_SCORES_BELOW = 1 << 21


def _float32_products(q: torch.Tensor, keys: int, scores: int) -> bool:
    """Whether causal attention in float32 on a CPU runs as cpu_causal_attention's products, not flash."""
    if not torch.is_grad_enabled() or scores >= FLOAT32_SCORES_BELOW:
        return False
    return torch.compiler.is_compiling() or _products_faster(tuple(q.shape), keys)


@functools.cache
def _products_faster(shape: tuple[int, ...], keys: int) -> bool:
    """Whether causal attention for queries of `shape` (B, nh, T, hs) and `keys` keys, forward and backward in
    float32, is faster on this CPU as two products than in the flash kernel: the best of three runs of each,
    interleaved, timed once per shape and process (a few ms at the CPU recipe's shape). No random numbers drawn:
    training's streams stay as they were."""
    with torch.enable_grad():
        q = torch.ones(shape, requires_grad=True)
        k, v = (torch.ones(*shape[:-2], keys, shape[-1], requires_grad=True) for _ in range(2))
        kernels = (functools.partial(cpu_causal_attention, q, k, v, 0.0, torch.float32),
                   functools.partial(F.scaled_dot_product_attention, q, k, v, is_causal=True))
        best = [math.inf, math.inf]
        for _ in range(3):
            for i, kernel in enumerate(kernels):
                start = time.perf_counter()
                kernel().sum().backward()
                best[i] = min(best[i], time.perf_counter() - start)
    return best[0] < best[1]


def cpu_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float,
                         dtype: torch.dtype) -> torch.Tensor:
    """Causal attention of (B, nh, T, hs) heads as products in `dtype`: scores (B, nh, T, T) plus a causal bias, a
    softmax (computed in float32 by the kernel, stored in `dtype`: bf16, as flash attention's probabilities are on
    a GPU, or float32), then the sums of the values."""
    T = q.size(-2)
    with torch.autocast("cpu", enabled=False):
        scores = torch.matmul((q * q.size(-1) ** -0.5).to(dtype), k.to(dtype).mT) + _causal_bias(T, dtype)
        weights = torch.softmax(scores, dim=-1)
        if dropout_p:
            weights = F.dropout(weights, dropout_p)
        return weights @ v.to(dtype)


def _causal_bias(T: int, dtype: torch.dtype) -> torch.Tensor:
    """(T, T): 0 where a query may see the key (at or before it), -inf after it."""
    # torch.compile builds it into the graph: dynamo warns where it has to trace through functools.cache
    return _build_causal_bias(T, dtype) if torch.compiler.is_compiling() else _cached_causal_bias(T, dtype)


def _build_causal_bias(T: int, dtype: torch.dtype) -> torch.Tensor:
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    return torch.zeros(T, T, dtype=dtype).masked_fill(future, float("-inf"))


_cached_causal_bias = functools.cache(_build_causal_bias)
