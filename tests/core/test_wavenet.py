"""WaveNet: mu-law, causality, fast generation equals the full forward pass, learning, the recipe."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from genq.core import api, checkpoint
from genq.core.api import DataError, DataSource
from genq.core.models.wavenet import recipe
from genq.core.models.wavenet.net import FastState, WaveNet, WaveNetConfig, mu_law_decode, mu_law_encode
from tests.core.conftest import fit_one_batch

TONES = DataSource(kind="audio", builtin="tones")
TINY = {"n_layers": 4, "residual_channels": 8, "segment_length": 128, "batch_size": 4, "max_steps": 10,
        "eval_interval": 5, "checkpoint_interval": 5}


@pytest.fixture(autouse=True)
def fast_recipe(monkeypatch):
    monkeypatch.setattr(recipe, "EVAL_SECONDS", 0.05)
    monkeypatch.setattr(recipe, "EVAL_CLIPS", 2)


def tiny(n_classes: int = 0, **kw) -> WaveNet:
    cfg = {"n_layers": 6, "residual_channels": 8, "skip_channels": 8, "dilation_cycle": 3, "n_classes": n_classes}
    return WaveNet(WaveNetConfig(**{**cfg, **kw}))


def test_mu_law_round_trip():
    x = torch.linspace(-1, 1, 10001)
    codes = mu_law_encode(x)
    assert codes.min() == 0 and codes.max() == 255 and (codes.diff() >= 0).all()
    y = mu_law_decode(codes)
    err = (y - x).abs()
    assert err.max() < 0.03 and err[4900:5100].max() < 1e-3  # finer steps near zero
    assert torch.equal(mu_law_encode(mu_law_decode(torch.arange(256))), torch.arange(256))


def test_output_is_causal():
    torch.manual_seed(0)
    net = tiny().eval()
    codes = torch.randint(0, 256, (2, 40))
    changed = codes.clone()
    changed[:, 30:] = torch.randint(0, 256, (2, 10))
    a, b = net(codes), net(changed)
    assert a.shape == (2, 256, 40)
    assert torch.allclose(a[:, :, :30], b[:, :, :30]) and not torch.allclose(a[:, :, 30:], b[:, :, 30:])


@pytest.mark.parametrize("n_classes", [0, 3])
def test_fast_generation_matches_the_full_forward_pass(n_classes):
    torch.manual_seed(0)
    net = tiny(n_classes).eval()
    codes = torch.randint(0, 256, (2, 60))
    label = torch.tensor([0, 2]) if n_classes else None
    state = FastState(net, 2, label)
    stepped = torch.stack([state.step(codes[:, t]) for t in range(60)], dim=2)
    assert torch.allclose(net(codes, label), stepped, atol=1e-5)


def test_learns_a_sine_and_same_seed_same_clip():
    torch.manual_seed(0)
    net = tiny()
    audio = 0.6 * torch.sin(2 * torch.pi * torch.arange(257) / 16).repeat(4, 1)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first, last = fit_one_batch(lambda: net.loss(audio), opt, 60)
    assert last < 0.2 * first
    net.eval()
    a = net.generate(2, 200, generator=torch.Generator().manual_seed(1))
    b = net.generate(2, 200, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 200) and torch.equal(a, b)
    spectrum = torch.fft.rfft(a[:, 50:] - a[:, 50:].mean(1, keepdim=True)).abs().mean(0)
    assert spectrum.argmax() == pytest.approx(150 / 16, abs=1)  # the learnt period comes back


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    net = tiny(2).eval()
    checkpoint.save(tmp_path, 1, {"model": net}, {"kind": "wavenet", "config": vars(net.cfg)})
    ckpt = checkpoint.load_latest(tmp_path)
    net2 = WaveNet(WaveNetConfig(**ckpt.config)).eval()
    ckpt.load_into({"model": net2})
    codes, label = torch.randint(0, 256, (2, 30)), torch.tensor([1, 0])
    assert torch.equal(net(codes, label), net2(codes, label))


def test_conditional_recipe_trains_and_generates_wavs(tmp_path, make_hooks):
    hooks = make_hooks()
    res = api.train("wavenet", {**TINY, "conditional": True}, TONES, tmp_path / "job", hooks)
    assert res.step == 10 and res.stopped is None
    for name in ("train/loss", "val/loss", "throughput/samples_per_s", "eval/pitch_accuracy",
                 "eval/spectral_distance"):
        assert name in hooks.series, name
    assert [s.prompt for s in res.samples] == ["A3", "C4"] and all(s.kind == "audio" for s in res.samples)

    gen = {"num_samples": 2, "seconds": 0.05, "seed": 3}
    out = api.generate(tmp_path / "job", ["A4", "e5", None], gen, tmp_path / "out", hooks)
    assert [s.prompt for s in out] == ["A4", "A4", "e5", "e5", None, None]
    for s in out:
        with wave.open(str(s.path)) as w:
            assert (w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 1, 8000, 400)
    again = api.generate(tmp_path / "job", ["A4"], gen, tmp_path / "again", hooks)
    assert [s.path.read_bytes() for s in again] == [s.path.read_bytes() for s in out[:2]]
    with pytest.raises(DataError, match="names no class"):
        api.generate(tmp_path / "job", ["B flat"], gen, tmp_path / "bad", hooks)


def test_a_clip_cut_short_by_a_stop_request_is_not_kept(tmp_path, make_hooks):
    api.train("wavenet", {**TINY, "conditional": True}, TONES, tmp_path / "job", make_hooks())
    gen = {"num_samples": 2, "seconds": 0.5, "seed": 3}  # 4,000 samples: the decoder asks at 999, 1999, ...
    hooks = make_hooks(stop_at=2)  # asked before the prompt, at sample 999, then stopped at 1999
    assert api.generate(tmp_path / "job", ["A4", "e5"], gen, tmp_path / "cut", hooks) == []
    assert hooks.lines[-1] == ("stop requested (cancel) during prompt 1 of 2: its unfinished samples are dropped, "
                               "those of the 0 before it kept")
    hooks = make_hooks(stop_at=5)  # the first prompt whole (1 + 4 questions), stopped before the second
    kept = api.generate(tmp_path / "job", ["A4", "e5"], gen, tmp_path / "whole", hooks)
    assert [s.prompt for s in kept] == ["A4", "A4"] and hooks.progress_calls[-1] == (1, 2)
    # progress moves within a prompt too, at each of the decoder's checks (samples of the 2 x 4,000 asked)
    assert hooks.progress_calls[:5] == [(0, 2), (1000, 8000), (2000, 8000), (3000, 8000), (4000, 8000)]
    for s in kept:
        with wave.open(str(s.path)) as w:
            assert w.getnframes() == 4000


def test_unconditional_recipe_stops_on_request_and_checks_its_data(tmp_path, make_hooks):
    hooks = make_hooks(stop_at=3)
    res = api.train("wavenet", TINY, TONES, tmp_path / "job", hooks)
    assert res.stopped == "cancel" and res.step == 3 and checkpoint.latest_step(tmp_path / "job") == 3
    res = api.train("wavenet", TINY, TONES, tmp_path / "job", make_hooks())  # resumes and finishes
    assert res.step == 10 and len(res.samples) == 2
    with pytest.raises(DataError, match="wavenet needs an audio dataset"):
        api.train("wavenet", TINY, DataSource(kind="images", builtin="digits"), tmp_path / "x", make_hooks())
    single = tmp_path / "one.wav"
    from genq.core.data.audio import write_wav

    write_wav(single, np.sin(np.arange(4000) / 3), 8000)
    with pytest.raises(DataError, match="needs labelled audio"):
        api.train("wavenet", {**TINY, "conditional": True}, DataSource(kind="audio", path=single), tmp_path / "y",
                  make_hooks())
    write_wav(single, np.sin(np.arange(10) / 3), 8000)  # its validation part (1 sample) gave a val/loss of 0.0
    with pytest.raises(DataError, match=r"too short to train on \(10 samples\): the last 10% of each clip"):
        api.train("wavenet", TINY, DataSource(kind="audio", path=single), tmp_path / "z", make_hooks())
