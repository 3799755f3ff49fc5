"""The GPT network: shapes, learning, rotary positions, the sliding attention window and the KV cache."""

from __future__ import annotations

import math

import pytest
import torch

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
