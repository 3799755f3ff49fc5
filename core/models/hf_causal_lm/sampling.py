"""Sampling a Hugging Face causal LM with its own KV cache, one seeded generator per row.

`model.generate` draws every row from one random stream, so a row's text would change with its batch
neighbours; here each row draws its noise from its own torch.Generator, and the rows still share one forward
pass per token. Temperature, top-k and top-p are transformers' own logits warpers, applied to the whole batch;
the draw is the Gumbel-max trick (argmax of the filtered logits plus Gumbel noise samples the softmax), so the
only per-row work is a torch.rand call, which draws the row's uniforms for several tokens at once.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from genq.core import base_models
from genq.core.sample import seeded_generator

GEN_BATCH = 64  # rows decoded at once
NOISE_FLOATS = 1 << 18  # uniforms a row draws at once (1 MiB): tokens' worth of noise, up to NOISE_TOKENS
NOISE_TOKENS = 16


@torch.no_grad()
def sample_rows(net: nn.Module, prompt_ids: list[int], seeds: list[int], device: str, max_new_tokens: int,
                temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                eos_id: int | None = None) -> list[list[int]]:
    """The new tokens of one row per seed continuing `prompt_ids` (cut before eos_id), GEN_BATCH rows at a time."""
    out: list[list[int]] = []
    for done in range(0, len(seeds), GEN_BATCH):
        gens = [seeded_generator(s, device) for s in seeds[done:done + GEN_BATCH]]
        out += _batch(net, prompt_ids, gens, device, max_new_tokens, temperature, top_k, top_p, eos_id)
    return out


def _batch(net, prompt_ids, gens, device, max_new_tokens, temperature, top_k, top_p, eos_id) -> list[list[int]]:
    window = base_models.context_window(net.config.to_dict()) or 1 << 30
    rows = len(gens)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)] + ([TopKLogitsWarper(top_k)] if top_k else [])
                                  + ([TopPLogitsWarper(top_p)] if top_p is not None and top_p < 1 else []))
    tokens = torch.tensor([prompt_ids[-(window - 1):]] * rows, dtype=torch.long, device=device)  # (B, T)
    new = torch.empty(rows, 0, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    cache, cached, feed = None, 0, tokens
    chunk, noise, cache_arg = 1, None, _cache_arg(net)
    for i in range(max_new_tokens):
        if cached + feed.size(1) > window:
            # the window is full: start a fresh cache on the last half of it (learned positions end at the window)
            feed, cache, cached = tokens[:, -(window // 2):], None, 0
        out = net(input_ids=feed, use_cache=True, **{cache_arg: cache})
        cache, cached = _cache_of(out), cached + feed.size(1)
        logits = warpers(tokens, out.logits[:, -1, :].float())  # (B, vocab), -inf outside top-k / top-p
        if i % chunk == 0:
            # Tokens of noise a row draws per rand call: set by the vocabulary only, never by the batch, so a row's
            # stream of uniforms is the same whatever its neighbours.
            chunk = max(1, min(NOISE_TOKENS, NOISE_FLOATS // logits.size(1)))
            noise = torch.stack([torch.rand(chunk, logits.size(1), generator=g, device=device) for g in gens], 1)
        nxt = _gumbel_max(logits, noise[i % chunk])  # (B, 1)
        tokens, new, feed = torch.cat([tokens, nxt], 1), torch.cat([new, nxt], 1), nxt  # nxt: (B, 1)
        if eos_id is not None:
            finished |= nxt.squeeze(1) == eos_id
            if i % 8 == 7 and bool(finished.all()):  # checked now and then: each check syncs with a GPU
                break
    texts = []
    for row in new.tolist():
        texts.append(row[:row.index(eos_id)] if eos_id is not None and eos_id in row else row)
    return texts


def _gumbel_max(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row of logits (B, vocab) from uniforms (B, vocab): argmax(logits + Gumbel noise)."""
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))  # rand is in [0, 1): clamp keeps log finite
    return (logits + gumbel).argmax(dim=-1, keepdim=True)


def _cache_arg(net: nn.Module) -> str:
    """The forward keyword of the KV cache: `past_key_values`, renamed `cache` in recent transformers."""
    return "cache" if "cache" in inspect.signature(net.forward).parameters else "past_key_values"


def _cache_of(out) -> object:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
