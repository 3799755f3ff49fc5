"""genq's decoding kernel (core/models/gpt/decode_attention.cpp): torch's attention, fused; and decoding without it."""

from __future__ import annotations

import math

import pytest
import torch

from genq.core.models.gpt import kernels, slots
from genq.core.models.gpt.net import GPT, GPTConfig


def torch_attention(q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """What the step computes without the kernel: baddbmm, softmax and bmm over each slot's first keys."""
    nh, width = kv.size(2), mask.size(1)
    keys, values = kv[0, :, :, :width].flatten(0, 1), kv[1, :, :, :width].flatten(0, 1)
    hidden = mask[:, None, :].expand(-1, nh, -1).flatten(0, 1)[:, None]
    scores = torch.baddbmm(hidden, q[:, None], keys.transpose(1, 2), alpha=scale)
    return torch.bmm(torch.softmax(scores, dim=-1), values)[:, 0]


@pytest.fixture
def kernel():
    if not kernels.decode_attention():
        pytest.skip("genq's kernel is unavailable here (no C++ compiler or no AVX2)")
    return torch.ops.genq.decode_attention


@pytest.mark.parametrize("slots_, nh, W, hs, width", [(32, 4, 256, 32, 216), (3, 2, 64, 16, 13), (1, 1, 40, 8, 1),
                                                      (5, 3, 100, 40, 100), (2, 2, 300, 64, 257)])
def test_the_kernel_is_torchs_attention(kernel, slots_, nh, W, hs, width):
    torch.manual_seed(width)
    kv, q = torch.randn(2, slots_, nh, W, hs) * 3, torch.randn(slots_ * nh, hs)
    mask = torch.zeros(slots_, width)
    for s in range(slots_):  # each slot sees its own number of keys, at least one
        mask[s, torch.randint(1, width + 1, ()).item():] = float("-inf")
    scale = 1 / math.sqrt(hs)
    assert torch.allclose(kernel(q, kv, mask, scale), torch_attention(q, kv, mask, scale), atol=2e-6, rtol=1e-5)
    rows = torch.randn(slots_ * nh, 3 * hs)[:, hs:2 * hs]  # q's rows apart, as a slice of the step's qkv
    assert torch.allclose(kernel(rows, kv, mask, scale), torch_attention(rows.contiguous(), kv, mask, scale),
                          atol=2e-6, rtol=1e-5)


def test_the_kernel_names_what_it_cannot_take(kernel):
    kv, mask = torch.zeros(2, 1, 1, 8, 12), torch.zeros(1, 4)
    with pytest.raises(RuntimeError, match="hs a multiple of 8"):
        kernel(torch.zeros(1, 12), kv, mask, 1.0)
    with pytest.raises(RuntimeError, match="float32 tensors only"):
        kernel(torch.zeros(1, 12, dtype=torch.float64), kv.double(), mask.double(), 1.0)


def test_decoding_without_the_kernel_gives_the_same_logits(kernel, monkeypatch):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    tokens, pos = torch.tensor([3, 5, 7]), torch.tensor([4, 9, 15])

    def logits() -> torch.Tensor:
        cache = model.new_slots(3, "cpu", torch.float32, 16)
        torch.manual_seed(1)
        cache.kv.normal_()
        return model.decode_slots(cache, tokens, pos, 16)

    fused = logits()
    monkeypatch.setattr(kernels, "decode_attention", lambda: False)
    slots._STEPS.clear()
    assert torch.allclose(logits(), fused, atol=1e-5)
    slots._STEPS.clear()


def test_where_the_kernel_cannot_be_built_decoding_says_why_and_goes_on(monkeypatch, tmp_path):
    monkeypatch.setenv("GENQ_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    kernels.decode_attention.cache_clear()
    try:
        with pytest.warns(UserWarning, match="genq's kernel is unavailable .no C\\+\\+ compiler"):
            assert kernels.decode_attention() is False
    finally:
        kernels.decode_attention.cache_clear()
    assert list(tmp_path.rglob("*.so")) == []
