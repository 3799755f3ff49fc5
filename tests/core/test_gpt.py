"""The GPT network: shapes, learning, the KV cache and long generation."""

from __future__ import annotations

import math

import torch

from genq.core.nets.gpt import GPT, GPTConfig, KVCache
from genq.core.sample import generate


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    config = {"vocab_size": 11, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16, **kw}
    return GPT(GPTConfig(**config))


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
    first = net(x, y)[1].item()
    for _ in range(150):
        _, loss = net(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_cache_matches_full_forward_for_chunks():
    net = tiny().eval()
    x = torch.randint(0, 11, (2, 12))
    full = net(x)[0]
    cache = KVCache(2)
    a = net(x[:, :5], cache=cache)[0]
    b = net(x[:, 5:9], cache=cache)[0]  # several new tokens after a prefix: needs the offset mask
    c = net(x[:, 9:], cache=cache)[0]
    assert torch.allclose(torch.cat([a, b, c], dim=1), full, atol=1e-5)


def test_cached_greedy_generation_equals_uncached():
    net = tiny()
    x = torch.randint(0, 11, (2, 3))
    with_cache = generate(net, x, 13, top_k=1)
    without = generate(net, x, 13, top_k=1, use_cache=False)
    assert with_cache.shape == (2, 16)
    assert torch.equal(with_cache, without)


def test_generation_beyond_block_size():
    net = tiny()
    x = torch.randint(0, 11, (2, 20))  # the prompt alone is longer than the block
    out = generate(net, x, 40, top_k=1)
    ref = generate(net, x, 40, top_k=1, use_cache=False)
    assert out.shape == (2, 60)
    assert torch.equal(out[:, :21], ref[:, :21])  # same context up to the first slide
    assert int(out.max()) < 11
