"""The GRU network: shapes, learning, hidden-state-carrying generation."""

from __future__ import annotations

import torch

from genq.core.models.gru.net import GRULM, GRUConfig
from genq.core.sample import generate
from tests.core.conftest import fit_one_batch


def tiny() -> GRULM:
    torch.manual_seed(0)
    return GRULM(GRUConfig(vocab_size=9, n_embd=8, hidden_size=16, n_layer=2))


def test_shapes():
    logits, loss = tiny()(torch.randint(0, 9, (3, 7)), torch.randint(0, 9, (3, 7)))
    assert logits.shape == (3, 7, 9)
    assert loss.ndim == 0


def test_overfits_one_batch():
    net = tiny()
    x = torch.randint(0, 9, (4, 12))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    first, last = fit_one_batch(lambda: net(x, y)[1], opt, 150)
    assert last < 0.15 * first


def test_carried_hidden_state_equals_rereading():
    net = tiny()
    x = torch.randint(0, 9, (2, 4))
    cached = generate(net, x, 20, top_k=1)
    reread = generate(net, x, 20, top_k=1, use_cache=False)
    assert cached.shape == (2, 24)
    assert torch.equal(cached, reread)
