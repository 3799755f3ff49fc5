"""Autoregressive sampling for the language models: temperature, top-k, top-p, a seeded generator, batches.

A model works with `generate` if it has `step(idx, state) -> (logits (B, vocab), state)` (incremental
decoding with a KV cache or a hidden state), a `forward(idx) -> (logits (B, T, vocab), loss)` and a
`context_window` (the longest input it reads, or None).
"""

from __future__ import annotations

import os

import torch
from torch import nn


def seeded_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on `device` seeded with `seed` (any int: its low 64 bits, all a generator takes; seeds derived
    from a user's, like seed x 1,000,003 + row, go past them), or with a fresh random seed when it is None."""
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    return torch.Generator(device=device).manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from logits (B, vocab); returns (B, 1)."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        # nucleus: keep the most likely tokens whose total probability reaches top_p (at least one)
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
             eos_id: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """Extend idx (B, T) by up to max_new_tokens sampled tokens; returns (B, T + new).

    With eos_id, stops early once every row has produced it. use_cache=False re-reads the (cropped) context
    every step: slow, the reference the cached path is tested against.
    """
    was_training = model.training
    model.eval()
    state, feed = None, idx
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for i in range(max_new_tokens):
        if use_cache:
            logits, state = model.step(feed, state)
        else:
            window = model.context_window
            logits = model(idx if window is None else idx[:, -window:])[0][:, -1, :]
        nxt = sample_logits(logits, temperature, top_k, top_p, generator)
        idx = torch.cat([idx, nxt], dim=1)
        feed = nxt
        if eos_id is not None:
            done |= nxt.squeeze(1) == eos_id
            if i % 16 == 15 and bool(done.all()):  # checked now and then: each check syncs with the GPU
                break
    model.train(was_training)
    return idx
