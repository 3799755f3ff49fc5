"""genq's decoding kernel (core/models/gpt/decode_attention.cpp): torch's attention, fused; and decoding without it."""

from __future__ import annotations

import math

import pytest
import torch

from genq.core.models.gpt import kernels, slots
from genq.core.models.gpt.net import GPT, GPTConfig


def torch_attention(qkv: torch.Tensor, kv: torch.Tensor, pos: torch.Tensor, scale: float) -> torch.Tensor:
    """What the step computes without the kernel: the new keys and values written with index_copy_, then baddbmm,
    softmax and bmm over each slot's keys, those it has written unmasked."""
    S, nh, W, hs = kv.shape[1:]
    rows = slots._ring_rows(S, nh, W, "cpu")
    kv.view(-1, hs).index_copy_(0, (rows + (pos % W)[:, None]).view(-1), qkv[:, nh:].reshape(-1, hs))
    mask = torch.full((W, W), float("-inf")).triu_(1)[pos.clamp(max=W - 1)]  # (S, W)
    keys, values = kv[0].flatten(0, 1), kv[1].flatten(0, 1)
    hidden = mask[:, None, :].expand(-1, nh, -1).flatten(0, 1)[:, None]
    q = qkv[:, :nh].reshape(-1, 1, hs)
    scores = torch.baddbmm(hidden, q, keys.transpose(1, 2), alpha=scale)
    return torch.bmm(torch.softmax(scores, dim=-1), values)[:, 0]


@pytest.fixture
def kernel():
    if not kernels.decode_attention():
        pytest.skip("genq's kernel is unavailable here (no C++ compiler or no AVX2)")
    return torch.ops.genq.decode_attention


@pytest.mark.parametrize("slots_, nh, W, hs", [(32, 4, 256, 32), (3, 2, 64, 16), (1, 1, 40, 8), (5, 3, 100, 40),
                                              (2, 2, 300, 64)])
def test_the_kernel_writes_the_keys_and_is_torchs_attention(kernel, slots_, nh, W, hs):
    torch.manual_seed(W)
    kv = torch.randn(2, slots_, nh, W, hs) * 3
    pos = torch.randint(0, 2 * W, (slots_,))  # rings before and after they wrap
    pos[0] = 0  # a slot's first token: it sees itself alone
    scale = 1 / math.sqrt(hs)
    for qkv in (torch.randn(slots_, 3 * nh, hs), torch.randn(slots_, 5 * nh, hs)[:, nh:4 * nh]):  # rows apart too
        ours, theirs = kv.clone(), kv.clone()
        y = kernel(qkv, ours, pos, scale)
        assert torch.allclose(y, torch_attention(qkv, theirs, pos, scale), atol=2e-6, rtol=1e-5)
        assert torch.equal(ours, theirs)  # the same keys and values written, where torch writes them


def test_the_kernel_names_what_it_cannot_take(kernel):
    kv, pos = torch.zeros(2, 1, 1, 8, 12), torch.zeros(1, dtype=torch.long)
    with pytest.raises(RuntimeError, match="hs a multiple of 8"):
        kernel(torch.zeros(1, 3, 12), kv, pos, 1.0)
    with pytest.raises(RuntimeError, match="float32 tensors only"):
        kernel(torch.zeros(1, 3, 12, dtype=torch.float64), kv.double(), pos, 1.0)
    with pytest.raises(RuntimeError, match="negative position"):
        kernel(torch.zeros(1, 3, 16), torch.zeros(2, 1, 1, 8, 16), -pos - 1, 1.0)


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


def test_a_kernel_without_its_source_is_unavailable_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("GENQ_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "SOURCE", tmp_path / "decode_attention.cpp")  # an install that left it out
    with pytest.raises(kernels.KernelUnavailable, match="its source is not installed"):
        kernels.build()
