"""Sampling: seeds, temperature, top-k, top-p."""

from __future__ import annotations

import torch

from genq.core.sample import sample_logits


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_same_seed_same_sample():
    logits = torch.randn(5, 30)
    assert torch.equal(sample_logits(logits, generator=gen(3)), sample_logits(logits, generator=gen(3)))
    draws = {tuple(sample_logits(logits, generator=gen(s)).flatten().tolist()) for s in range(5)}
    assert len(draws) > 1


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 2.9]]).repeat(200, 1)
    k2 = sample_logits(logits, top_k=2, generator=gen())
    assert set(k2.flatten().tolist()) == {3, 4}
    assert set(sample_logits(logits, top_k=1, generator=gen()).flatten().tolist()) == {3}
    p_small = sample_logits(logits, top_p=0.05, generator=gen())
    assert set(p_small.flatten().tolist()) == {3}
    p_mid = sample_logits(logits, top_p=0.6, generator=gen())  # 3 (~0.36) and 4 (~0.33) reach 0.6
    assert set(p_mid.flatten().tolist()) == {3, 4}


def test_low_temperature_is_nearly_greedy():
    logits = torch.tensor([[0.0, 1.0, 1.5]]).repeat(300, 1)
    cold = sample_logits(logits, temperature=0.05, generator=gen())
    hot = sample_logits(logits, temperature=5.0, generator=gen())
    assert (cold == 2).float().mean() > 0.99
    assert len(set(hot.flatten().tolist())) == 3
