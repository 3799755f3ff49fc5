"""VAE: shapes, the loss, learning one batch, checkpoints, the recipe end to end."""

from __future__ import annotations

import pytest
import torch

from genq.core import api, checkpoint
from genq.core.api import DataError, DataSource
from genq.core.data.builtin_media import digits
from genq.core.eval.images import train_classifier
from genq.core.models.vae import recipe
from genq.core.models.vae.net import VAE, VAEConfig, loss_terms, vae_loss

DIGITS = DataSource(kind="images", builtin="digits")
TINY = {"base_channels": 8, "z_dim": 4, "batch_size": 16, "image_size": 8, "max_steps": 12,
        "eval_interval": 6, "checkpoint_interval": 6}


@pytest.fixture(autouse=True)
def fast_recipe(monkeypatch):
    monkeypatch.setattr(recipe, "CLASSIFIER_STEPS", 5)
    monkeypatch.setattr(recipe, "EVAL_SAMPLES", 60)


@pytest.mark.parametrize("size, channels", [(8, 1), (16, 3), (32, 1)])
def test_shapes(size, channels):
    net = VAE(VAEConfig(image_size=size, channels=channels, z_dim=5, base_channels=4))
    x = torch.rand(3, channels, size, size)
    logits, mu, logvar = net(x)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (3, 5)
    net.eval()
    assert net.reconstruct(x).shape == x.shape and net.sample(2).shape == (2, channels, size, size)
    assert 0 <= net.sample(2).min() and net.sample(2).max() <= 1


def test_kl_is_zero_for_the_prior_and_recon_is_the_bce_sum():
    x = torch.rand(2, 1, 4, 4)
    logits = torch.zeros_like(x)
    recon, kl = loss_terms(logits, x, torch.zeros(2, 3), torch.zeros(2, 3))
    assert torch.allclose(kl, torch.zeros(2))
    assert torch.allclose(recon, torch.full((2,), 16 * torch.log(torch.tensor(2.0)).item()))  # p = 0.5 per pixel
    _, kl_far = loss_terms(logits, x, torch.ones(2, 3), torch.zeros(2, 3))
    assert torch.allclose(kl_far, torch.full((2,), 1.5))  # 0.5 * sum(mu^2)


def test_learns_one_batch():
    torch.manual_seed(0)
    net = VAE(VAEConfig(image_size=8, channels=1, z_dim=4, base_channels=8))
    x = (digits(8).floats()[:16] > 0.5).float()  # binarised: a perfect fit has zero reconstruction loss
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = None
    for _ in range(60):
        loss, parts = vae_loss(net, x)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first and parts["recon"] < 0.5 * first


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    net = VAE(VAEConfig(image_size=16, channels=1, z_dim=4, base_channels=4)).eval()
    checkpoint.save(tmp_path, 1, {"model": net}, {"kind": "vae", "config": vars(net.cfg)})
    ckpt = checkpoint.load_latest(tmp_path)
    net2 = VAE(VAEConfig(**ckpt.config)).eval()
    ckpt.load_into({"model": net2})
    x, z = torch.rand(3, 1, 16, 16), torch.randn(3, 4)
    assert torch.equal(net.reconstruct(x), net2.reconstruct(x)) and torch.equal(net.decode(z), net2.decode(z))


def test_recipe_trains_evaluates_and_generates(tmp_path, make_hooks):
    hooks = make_hooks()
    res = api.train("vae", TINY, DIGITS, tmp_path / "job", hooks)
    assert res.step == 12 and res.stopped is None
    for name in ("train/loss", "train/recon", "train/kl", "val/loss", "eval/elbo", "eval/reconstruction_error",
                 "eval/reconstruction_accuracy", "eval/fid", "throughput/samples_per_s"):
        assert name in hooks.series, name
    losses = [v for _, v in hooks.series["train/loss"]]
    assert losses[-1] < losses[0]
    assert res.metrics["eval/elbo"] == pytest.approx(-res.metrics["val/loss"])  # beta = 1
    assert {s.prompt for s in res.samples} == {None, "reconstructions"}
    assert all(s.path.exists() and s.path.parent == tmp_path / "job" / "samples" for s in res.samples)

    gen = {"num_samples": 3, "seed": 11}
    a = api.generate(tmp_path / "job", [None, "ignored"], gen, tmp_path / "a", hooks)
    b = api.generate(tmp_path / "job", [None, "ignored"], gen, tmp_path / "b", hooks)
    assert len(a) == 6 and all(s.kind == "image" for s in a)
    assert [s.path.read_bytes() for s in a] == [s.path.read_bytes() for s in b]
    assert a[0].path.read_bytes() != a[1].path.read_bytes()
    assert any("unconditional" in line for line in hooks.lines)


def test_recipe_stops_on_request_and_refuses_audio(tmp_path, make_hooks):
    hooks = make_hooks(stop_at=3, reason="shutdown")
    res = api.train("vae", TINY, DIGITS, tmp_path / "job", hooks)
    assert res.stopped == "shutdown" and res.step == 3 and checkpoint.latest_step(tmp_path / "job") == 3
    with pytest.raises(DataError, match="vae needs an images dataset"):
        api.train("vae", TINY, DataSource(kind="audio", builtin="tones"), tmp_path / "other", make_hooks())
    checkpoint.save(tmp_path / "dc", 1, {"model": torch.nn.Linear(1, 1)}, {"kind": "dcgan"})
    with pytest.raises(DataError, match="holds a dcgan checkpoint, not vae"):
        api.train("vae", TINY, DIGITS, tmp_path / "dc", make_hooks())


def test_a_stop_request_ends_the_evaluation_classifiers_fit_and_the_run_at_its_first_step(tmp_path, make_hooks,
                                                                                        monkeypatch):
    """The classifier is fitted before the first step: a cancel then waited for all of its steps (minutes at
    256 x 256). Now the fit asks every 50 steps, and the run stops before its first step."""
    asked = []
    train_classifier(digits(), steps=200, stop=lambda: asked.append(1))
    assert len(asked) == 3  # at steps 50, 100 and 150, none of them a stop

    class CancelAtOnce(make_hooks):
        def stop_requested(self):
            return "cancel"

    monkeypatch.setattr(recipe, "CLASSIFIER_STEPS", 10**9)  # would never end unless stopped
    res = api.train("vae", TINY, DIGITS, tmp_path / "job", CancelAtOnce())
    assert res.stopped == "cancel" and res.step == 0
