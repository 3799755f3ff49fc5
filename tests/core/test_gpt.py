"""The GPT network: shapes, learning, rotary positions, the sliding attention window and the KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genq.core.models.gpt import attention as attention_module
from genq.core.models.gpt.attention import attention
from genq.core.models.gpt.net import GPT, GPTConfig, KVCache
from genq.core.sample import generate
from tests.core.conftest import fit_one_batch


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    config = {"vocab_size": 11, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16, **kw}
    return GPT(GPTConfig(**config))


def cached(net: GPT, x: torch.Tensor, chunks: list[int], start: int = 0) -> torch.Tensor:
    """Logits of x read through a KV cache in chunks of the given sizes, from position `start`."""
    cache = KVCache(net.config.n_layer, net.config.block_size)
    cache.pos = start
    return torch.cat([net(part, cache=cache)[0] for part in x.split(chunks, dim=1)], dim=1)


def test_shapes_tying_and_initial_loss():
    net = tiny()
    x = torch.randint(0, 11, (3, 16))
    logits, loss = net(x, x)
    assert logits.shape == (3, 16, 11)
    assert net.lm_head.weight is net.wte.weight
    assert abs(loss.item() - math.log(11)) < 0.3  # near uniform at init


def test_overfits_one_batch():
    net = tiny()
    x = torch.randint(0, 11, (4, 16))
    y = torch.roll(x, -1, dims=1)
    opt = net.optimizer(lr=1e-2, weight_decay=0.0)
    first, last = fit_one_batch(lambda: net(x, y)[1], opt, 150)
    assert last < 0.1 * first


def test_rotary_positions_are_relative():
    net = tiny().eval()
    x = torch.randint(0, 11, (2, 12))
    with torch.no_grad():
        at_zero = net(x)[0]
        for start in (5, 1000, 10**7):  # the same tokens read from a later position score the same
            assert torch.allclose(cached(net, x, [12], start), at_zero, atol=1e-5)


def test_attention_sees_the_newest_block_size_tokens():
    net = tiny(n_layer=1).eval()  # one layer: a token's logits depend on its window and nothing else
    x = torch.randint(0, 11, (1, 24))
    y = x.clone()
    y[0, 0] = (x[0, 0] + 1) % 11
    with torch.no_grad():
        a, b = net(x)[0], net(y)[0]
    assert not torch.allclose(a[:, 15], b[:, 15])  # position 15 sees positions 0..15
    assert torch.allclose(a[:, 16:], b[:, 16:], atol=1e-6)  # position 16 and later no longer see 0


def test_cache_matches_full_forward_for_chunks_and_past_block_size():
    net = tiny().eval()
    x = torch.randint(0, 11, (2, 40))  # 2.5 blocks
    with torch.no_grad():
        full = net(x)[0]
        for chunks in ([5, 4, 3], [1] * 40, [16, 16, 8], [3, 20, 1, 16]):  # several new tokens after a prefix
            assert torch.allclose(cached(net, x[:, :sum(chunks)], chunks), full[:, :sum(chunks)], atol=1e-5)
    cache = KVCache(2, 16)
    net(x, cache=cache)
    assert (cache.length, cache.pos) == (15, 40)  # keeps what the next token may see


def test_cached_greedy_generation_equals_uncached_past_block_size():
    net = tiny()
    x = torch.randint(0, 11, (2, 3))
    with_cache = generate(net, x, 45, top_k=1)
    without = generate(net, x, 45, top_k=1, use_cache=False)
    assert with_cache.shape == (2, 48)
    assert torch.equal(with_cache, without)


def test_generation_from_a_prompt_longer_than_the_block():
    net = tiny()
    x = torch.randint(0, 11, (2, 37))  # read in block-sized chunks
    out = generate(net, x, 30, top_k=1)
    assert out.shape == (2, 67) and torch.equal(out[:, :37], x)
    assert torch.equal(out, generate(net, x, 30, top_k=1, use_cache=False))


@pytest.mark.filterwarnings("ignore:Mismatch dtype")  # CPU rms_norm: bf16 input, fp32 gain -> unfused path
def test_bfloat16_autocast_with_the_cache():
    net = tiny().eval()
    x = torch.randint(0, 11, (2, 20))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = cached(net, x, [7, 1, 12])
    assert logits.shape == (2, 20, 11) and torch.isfinite(logits).all()
    assert torch.allclose(logits.float(), net(x)[0], atol=0.1)


def test_causal_attention_under_cpu_bf16_autocast_is_bf16_products_close_to_exact():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 4, 40, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(3, 4, 40, 16, dtype=torch.float64)
    y_exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    exact = torch.autograd.grad(y_exact, (q, k, v), grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attention(q.float(), k.float(), v.float(), None, True, 0.0)
        dropped = attention(q.float(), k.float(), v.float(), None, True, 0.5)
    assert y.dtype == torch.bfloat16  # the bf16 products, not the float32 flash kernel
    assert (y.double() - y_exact).norm() / y_exact.norm() < 0.02
    for g, e in zip(torch.autograd.grad(y.double(), (q, k, v), grad), exact, strict=True):
        assert (g - e).norm() / e.norm() < 0.03
    assert (dropped - y).abs().max() > 0.5  # dropout applies to the attention weights
    # causal: a change to the last key moves the last query's output only
    k2 = k.detach().clone()
    k2[:, :, -1] += 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y2 = attention(q.float(), k2.float(), v.float(), None, True, 0.0)
    assert torch.equal(y2[:, :, :-1], y[:, :, :-1]) and not torch.equal(y2[:, :, -1], y[:, :, -1])


def test_small_causal_attention_in_float32_trains_in_the_kernel_this_cpu_runs_faster(monkeypatch):
    q, k, v = (torch.randn(3, 4, 40, 16, requires_grad=True) for _ in range(3))
    grad = torch.randn(3, 4, 40, 16)
    flash = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    monkeypatch.setattr(attention_module, "_products_faster", lambda shape, keys: True)
    y = attention(q, k, v, None, True, 0.0)
    assert not torch.equal(y, flash) and torch.allclose(y, flash, atol=1e-5)  # the products: same numbers
    for g, e in zip(torch.autograd.grad(y, (q, k, v), grad), torch.autograd.grad(flash, (q, k, v), grad),
                    strict=True):
        assert torch.allclose(g, e, atol=1e-4)
    with torch.no_grad():  # outside training (evaluation, prompts): the flash kernel, the faster forward alone
        assert torch.equal(attention(q, k, v, None, True, 0.0), flash)
    monkeypatch.setattr(attention_module, "FLOAT32_SCORES_BELOW", 3 * 4 * 40 * 40)  # beyond the bound: flash
    assert torch.equal(attention(q, k, v, None, True, 0.0), flash)
    monkeypatch.undo()
    monkeypatch.setattr(attention_module, "_products_faster", lambda shape, keys: False)
    assert torch.equal(attention(q, k, v, None, True, 0.0), flash)


def test_which_float32_kernel_is_faster_is_timed_once_per_shape_drawing_no_random_numbers():
    attention_module._products_faster.cache_clear()
    rng = torch.get_rng_state()
    with torch.no_grad():  # it times the backward too, whatever the caller's mode
        first = attention_module._products_faster((2, 4, 40, 16), 40)
    assert isinstance(first, bool) and torch.equal(torch.get_rng_state(), rng)
    assert attention_module._products_faster((2, 4, 40, 16), 40) is first
    assert attention_module._products_faster.cache_info().hits == 1


def test_attention_with_more_scores_than_the_bound_stays_in_float32(monkeypatch):
    monkeypatch.setattr(attention_module, "BF16_SCORES_BELOW", 3 * 4 * 40 * 40)
    q, k, v = (torch.randn(3, 4, 40, 16) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attention(q, k, v, None, True, 0.0)
    assert y.dtype == torch.float32
    assert torch.equal(y, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_attention_on_a_gpu_leaves_cudnn_out_outside_training(monkeypatch):
    """cuDNN's attention builds a plan per shape, and decoding has a new one every token: outside training
    (no grad) a GPU's attention runs without it; training keeps it. (Meta tensors stand in for a GPU's.)"""
    cudnn_on = []

    def sdpa(q, k, v, **kwargs):
        cudnn_on.append(torch.backends.cuda.cudnn_sdp_enabled())
        return q

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", sdpa)
    q = torch.zeros(1, 2, 3, 4, device="meta")
    with torch.no_grad():
        attention_module.attention(q, q, q, None, False, 0.0)
    attention_module.attention(q, q, q, None, True, 0.0)
    assert cudnn_on == [False, True] and torch.backends.cuda.cudnn_sdp_enabled()
