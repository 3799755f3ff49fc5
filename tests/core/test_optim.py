"""Muon for the GPT's hidden matrices, AdamW for the rest: the split, the update size AdamW's lr means, and a
gpt job that learns, resumes exactly, and resumes an AdamW-only checkpoint with AdamW."""

from __future__ import annotations

import pytest
import torch

from genq.core import api, checkpoint, optim
from genq.core.models.gpt.net import GPT, GPTConfig

GPT_PARAMS = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 8, "lr": 3e-3,
              "max_steps": 60, "eval_interval": 30, "eval_iters": 2, "checkpoint_interval": 1000,
              "warmup_steps": 5, "optimizer": "muon"}
COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's Newton-Schulz coefficients


def test_muon_takes_the_blocks_matrices_and_adamw_everything_else():
    net = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    opts = optim.muon_with_adamw(net, net.h, 1e-3, 0.1, (0.9, 0.99), "cpu")
    assert set(opts) == {"optimizer", "muon"} and isinstance(opts["muon"], torch.optim.Muon)
    in_muon = {id(p) for g in opts["muon"].param_groups for p in g["params"]}
    in_adamw = {id(p) for g in opts["optimizer"].param_groups for p in g["params"]}
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[i] for i in in_muon) == sorted(
        n for n, p in net.named_parameters() if n.startswith("h.") and p.dim() == 2)
    assert not in_muon & in_adamw and in_muon | in_adamw == set(names)  # every weight once (the tied head too)
    assert id(net.wte.weight) in in_adamw
    assert opts["optimizer"].defaults["fused"] is True


def test_a_muon_update_has_adamw_size_for_the_same_lr():
    # match_rms_adamw: 0.2 * lr * sqrt(max(A, B)) times an orthogonalised update of RMS ~ 1/sqrt(max(A, B))
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(32, 128))
    opt = optim.muon([w], lr=1e-2, weight_decay=0.0)
    w.grad = torch.randn(32, 128)
    opt.step()
    rms = w.detach().pow(2).mean().sqrt().item()
    assert 0.15 * 1e-2 < rms < 0.3 * 1e-2  # Keller's "original" scaling would give ~0.09 lr here


def test_muon_on_a_cpu_is_torchs_update_in_float32():
    # the same iteration as torch.optim.Muon's bf16 one, so the two agree to bf16's precision
    torch.manual_seed(0)
    w_ours, w_torch = (torch.nn.Parameter(torch.randn(128, 512)) for _ in range(2))
    w_torch.data.copy_(w_ours.data)
    ours = optim.muon([w_ours], lr=1e-2, weight_decay=0.1)
    theirs = torch.optim.Muon([w_torch], lr=1e-2, weight_decay=0.1, momentum=optim.MOMENTUM, nesterov=True,
                              adjust_lr_fn="match_rms_adamw")
    start = w_ours.detach().clone()
    for _ in range(3):
        g = torch.randn(128, 512)
        w_ours.grad, w_torch.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    moved = (w_ours - start).norm()
    assert (w_ours - w_torch).norm() < 0.05 * moved  # bf16 rounding only
    theirs.load_state_dict(ours.state_dict())  # one state format: checkpoints of either load into the other
    tall = torch.randn(384, 128)
    assert optim.orthogonalise(tall, (3.4445, -4.7750, 2.0315), 5, 1e-7).dtype == torch.float32


def test_muon_orthogonalises_a_shapes_matrices_at_once_as_one_by_one():
    coefficients = (3.4445, -4.7750, 2.0315)
    updates = torch.randn(3, 96, 32)
    together = optim.orthogonalise(updates, coefficients, 5, 1e-7)
    alone = torch.stack([optim.orthogonalise(u, coefficients, 5, 1e-7) for u in updates])
    assert together.shape == (3, 96, 32) and torch.allclose(together, alone, atol=1e-5)
    in_bf16 = optim.orthogonalise(updates, coefficients, 5, 1e-7, torch.bfloat16)
    assert in_bf16.dtype == torch.float32 and (in_bf16 - alone).norm() < 0.05 * alone.norm()


def test_muon_batches_matrices_of_one_shape_or_its_transpose_without_changing_their_updates(cpu_kind):
    cpu_kind(False)  # float32, so the two agree to rounding
    torch.manual_seed(0)
    shapes = [(32, 96), (96, 32), (32, 96), (32, 32)]
    together = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    alone = [torch.nn.Parameter(p.detach().clone()) for p in together]
    opt_together = optim.muon(together, lr=1e-2, weight_decay=0.1)
    opts_alone = [optim.muon([p], lr=1e-2, weight_decay=0.1) for p in alone]
    for _ in range(2):
        for a, b in zip(together, alone, strict=True):
            a.grad = torch.randn(a.shape)
            b.grad = a.grad.clone()
        opt_together.step()
        for opt in opts_alone:
            opt.step()
    for a, b in zip(together, alone, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def _newton_schulz_in_float64(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The textbook iteration, X <- a X + (b A + c A^2) X with A = X X^T, on the wide form of g, in float64."""
    a, b, c = COEFFICIENTS
    x = g.double() if g.size(-2) <= g.size(-1) else g.double().mT
    x = x / x.norm(dim=(-2, -1), keepdim=True)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if g.size(-2) <= g.size(-1) else x.mT


@pytest.mark.parametrize("shape", [(2, 128, 512), (384, 128), (3, 64, 64), (32, 96), (16, 1024)])
def test_float32_newton_schulz_is_the_textbook_iteration(shape):
    # matrices more than 1.5x as long as short go through the Gram form (m x m products only): the same numbers
    torch.manual_seed(0)
    g = torch.randn(shape)
    ours = optim.orthogonalise(g, COEFFICIENTS, 5, 1e-7)
    exact = _newton_schulz_in_float64(g)
    assert ours.dtype == torch.float32 and (ours.double() - exact).norm() < 1e-5 * exact.norm()


def test_the_gram_form_keeps_a_low_rank_update_low_rank():
    # a gradient of rank 3 (one batch of a few tokens): its orthogonalised form has 3 singular values near 1 and
    # the rest 0, as the textbook iteration gives; squared magnitudes cost the Gram form some of float32's digits
    # (1e-4 here against the plain form's 3e-5), far fewer than torch's own Muon loses in bf16 (~1e-2)
    torch.manual_seed(0)
    g = torch.randn(64, 3) @ torch.randn(3, 256)
    ours = optim.orthogonalise(g, COEFFICIENTS, 5, 1e-7)
    singular = torch.linalg.svdvals(ours)
    assert singular[3:].max() < 1e-4 and ((singular[:3] > 0.6) & (singular[:3] < 1.3)).all()
    assert (ours.double() - _newton_schulz_in_float64(g)).norm() < 1e-3 * ours.norm()


def test_a_muon_gpt_learns_and_resumes_exactly(text_file, tmp_path, make_hooks):
    straight = make_hooks()
    api.train("gpt", GPT_PARAMS, text_file, tmp_path / "a", straight)
    curve = [v for _, v in straight.series["train/loss"]]
    assert curve[-1] < 0.75 * curve[0]
    state = checkpoint.load_latest(tmp_path / "a", "gpt").state
    assert {"optimizer", "muon"} <= set(state)

    stopped = api.train("gpt", GPT_PARAMS, text_file, tmp_path / "b", make_hooks(stop_at=25))
    assert stopped.stopped == "cancel"
    resumed = make_hooks()
    api.train("gpt", GPT_PARAMS, text_file, tmp_path / "b", resumed)
    assert resumed.series["val/loss"] == straight.series["val/loss"]
    a, b = (checkpoint.load_latest(tmp_path / n, "gpt").tensors["model"] for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_adamw_checkpoint_goes_on_with_adamw_when_muon_is_asked_for(text_file, tmp_path, make_hooks):
    adamw = {**GPT_PARAMS, "optimizer": "adamw"}
    api.train("gpt", adamw, text_file, tmp_path / "job", make_hooks(stop_at=25))
    hooks = make_hooks()
    result = api.train("gpt", {**GPT_PARAMS, "optimizer": "muon"}, text_file, tmp_path / "job", hooks)
    assert result.step == 60 and any("trained by AdamW alone" in line for line in hooks.lines)
    assert "muon" not in checkpoint.load_latest(tmp_path / "job", "gpt").state


def test_a_muon_checkpoint_goes_on_with_muon_when_adamw_is_asked_for(text_file, tmp_path, make_hooks):
    api.train("gpt", GPT_PARAMS, text_file, tmp_path / "job", make_hooks(stop_at=25))
    hooks = make_hooks()
    result = api.train("gpt", {**GPT_PARAMS, "optimizer": "adamw"}, text_file, tmp_path / "job", hooks)
    assert result.step == 60 and any("trained by Muon: it goes on so" in line for line in hooks.lines)
    assert any(line.startswith("params changed since the run began: optimizer 'adamw' (was 'muon');")
               for line in hooks.lines), hooks.lines
    assert "muon" in checkpoint.load_latest(tmp_path / "job", "gpt").state


def test_an_unknown_optimizer_is_a_param_error(text_file, tmp_path, make_hooks):
    from genq.core.errors import ParamError

    with pytest.raises(ParamError, match="optimizer"):
        api.train("gpt", {**GPT_PARAMS, "optimizer": "sgd"}, text_file, tmp_path / "job", make_hooks())
