"""DCGAN: shapes, learning on one batch, the prompt encoder, checkpoints, the recipe end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genq.core import api, checkpoint
from genq.core.api import DataError, DataSource, UnknownClasses
from genq.core.data.builtin_media import DIGIT_WORDS
from genq.core.models.dcgan import recipe
from genq.core.models.dcgan.net import DCGANConfig, Discriminator, Generator, d_loss, g_loss
from genq.core.models.dcgan.text_encoder import train_text_encoder
from tests.core.conftest import fit_one_batch

DIGITS = DataSource(kind="images", builtin="digits")
TINY = {"base_channels": 8, "z_dim": 8, "batch_size": 16, "image_size": 8, "max_steps": 12,
        "eval_interval": 6, "checkpoint_interval": 6}


@pytest.fixture(autouse=True)
def fast_recipe(monkeypatch):
    monkeypatch.setattr(recipe, "CLASSIFIER_STEPS", 5)
    monkeypatch.setattr(recipe, "TEXT_ENCODER_STEPS", 150)
    monkeypatch.setattr(recipe, "EVAL_SAMPLES", 60)


@pytest.mark.parametrize("size, channels, n_classes", [(8, 1, 0), (16, 3, 4), (32, 1, 10)])
def test_shapes(size, channels, n_classes):
    cfg = DCGANConfig(image_size=size, channels=channels, z_dim=8, base_channels=4, n_classes=n_classes)
    G, D = Generator(cfg), Discriminator(cfg)
    cond = F.one_hot(torch.arange(5) % max(n_classes, 1), n_classes).float() if n_classes else None
    x = G(torch.randn(5, 8), cond)
    assert x.shape == (5, channels, size, size) and x.abs().max() <= 1
    logit, cls = D(x, cond)
    assert logit.shape == (5,)
    assert (cls is None) if not n_classes else cls.shape == (5, n_classes)


def test_discriminator_and_generator_each_learn_one_batch():
    torch.manual_seed(0)
    cfg = DCGANConfig(image_size=8, channels=1, z_dim=8, base_channels=8, n_classes=3)
    G, D = Generator(cfg), Discriminator(cfg)
    real = torch.rand(16, 1, 8, 8) * 2 - 1
    labels = torch.arange(16) % 3
    cond = F.one_hot(labels, 3).float()
    z = torch.randn(16, 8)
    opt_d = torch.optim.Adam(D.parameters(), 1e-2)
    # D alone: separate this real batch from these fakes
    first, last = fit_one_batch(lambda: d_loss(D, real, G(z, cond).detach(), cond, labels)[0], opt_d, 30)
    assert last < 0.2 * first
    D.eval()
    opt_g = torch.optim.Adam(G.parameters(), 1e-2)
    first, last = fit_one_batch(lambda: g_loss(D, G(z, cond), cond, labels)[0], opt_g, 30)  # G fools frozen D
    assert last < 0.5 * first


def test_text_encoder_maps_phrasings_to_the_class():
    names = [[str(i), w] for i, w in enumerate(DIGIT_WORDS)]
    enc = train_text_encoder(names, steps=150, seed=0)
    prompts = ["7", "seven", "a handwritten seven", "Please draw me a 7!", "the number three", "nine"]
    cond, conf = enc.encode(prompts)
    assert cond.argmax(1).tolist() == [7, 7, 7, 7, 3, 9]
    assert conf.min() > 0.5 and torch.allclose(cond.sum(1), torch.ones(6))
    _, gibberish = enc.encode(["zxqv wplk"])
    assert gibberish.item() < 0.5


def test_checkpoint_round_trip_gives_identical_images(tmp_path):
    cfg = DCGANConfig(image_size=16, channels=1, z_dim=8, base_channels=4, n_classes=10)
    G = Generator(cfg).eval()
    checkpoint.save(tmp_path, 3, {"generator": G}, {"kind": "dcgan", "config": vars(cfg)})
    ckpt = checkpoint.load_latest(tmp_path)
    G2 = Generator(DCGANConfig(**ckpt.config)).eval()
    ckpt.load_into({"generator": G2})
    z, cond = torch.randn(4, 8), F.one_hot(torch.tensor([1, 2, 3, 7]), 10).float()
    assert torch.equal(G(z, cond), G2(z, cond))


def test_prompt_conditioned_recipe_trains_resumes_and_generates(tmp_path, make_hooks):
    hooks = make_hooks()
    res = api.train("dcgan", {**TINY, "conditional": "prompt"}, DIGITS, tmp_path / "job", hooks)
    assert res.step == 12 and res.stopped is None
    for name in ("train/loss", "train/d_loss", "train/g_loss", "throughput/samples_per_s", "eval/fid",
                 "eval/inception_score", "eval/class_accuracy", "eval/classifier_accuracy"):
        assert name in hooks.series, name
    assert [s for s, _ in hooks.series["eval/fid"]] == [6, 12]
    assert res.samples[0].path.name == "grid.png" and res.samples[0].path.parent == tmp_path / "job" / "samples"
    assert [s.prompt for s in res.samples[1:]] == [str(i) for i in range(10)]
    assert checkpoint.load_model_kind(tmp_path / "job") == "dcgan"

    more = make_hooks()  # a longer run continues from the checkpoint at step 12
    res = api.train("dcgan", {**TINY, "conditional": "prompt", "max_steps": 18}, DIGITS, tmp_path / "job", more)
    assert res.step == 18 and any("resumed from the checkpoint at step 12" in line for line in more.lines)

    prompts = ["7", "seven", "a handwritten seven", "qqzx vvkj", None]
    out = api.generate(tmp_path / "job", prompts, {"num_samples": 2, "seed": 5}, tmp_path / "out", hooks)
    assert [s.prompt for s in out] == [p for p in prompts for _ in range(2)]
    assert all(s.kind == "image" and s.path.suffix == ".png" and s.path.parent == tmp_path / "out" for s in out)
    assert any("matches no class well" in line for line in hooks.lines)
    # "7" and "seven" are the same class: with the same z (same seed, first prompt) they draw the same image
    again = api.generate(tmp_path / "job", ["seven"], {"num_samples": 2, "seed": 5}, tmp_path / "again", hooks)
    assert [s.path.read_bytes() for s in again] == [s.path.read_bytes() for s in out[:2]]
    other = api.generate(tmp_path / "job", ["seven"], {"num_samples": 2, "seed": 6}, tmp_path / "other", hooks)
    assert [s.path.read_bytes() for s in other] != [s.path.read_bytes() for s in again]


def test_class_conditioned_recipe_refuses_unknown_classes_and_stops_when_asked(tmp_path, make_hooks):
    hooks = make_hooks(stop_at=4)
    res = api.train("dcgan", {**TINY, "conditional": "class"}, DIGITS, tmp_path / "job", hooks)
    assert res.stopped == "cancel" and res.step == 4 and hooks.checkpoints[-1][0] == 4
    with pytest.raises(DataError, match="names no class"):
        api.generate(tmp_path / "job", ["a handwritten seven"], {"seed": 1}, tmp_path / "out", make_hooks())
    out = api.generate(tmp_path / "job", ["Seven"], {"seed": 1}, tmp_path / "out", make_hooks())
    assert len(out) == 1
    # Unknown classes after known ones: refused before any image is drawn, each named once.
    with pytest.raises(UnknownClasses, match=r"^2 prompts name no class of this model: 'eleven', 'ten' \(classes: 0, "
                       ) as refused:
        api.generate(tmp_path / "job", ["1", "eleven", None, "ten", "eleven"], {"seed": 1}, tmp_path / "mixed",
                     make_hooks())
    assert refused.value.reasons["ten"].startswith("the prompt 'ten' names no class of this model (classes: 0, ")
    assert set(refused.value.reasons) == {"eleven", "ten"}  # each, for a platform to fail its rows alone
    assert not (tmp_path / "mixed").exists() or not any((tmp_path / "mixed").iterdir())


def test_wrong_data_is_refused(tmp_path, make_hooks):
    with pytest.raises(DataError, match="needs an images dataset"):
        api.train("dcgan", TINY, DataSource(kind="audio", builtin="tones"), tmp_path / "a", make_hooks())
    folder = tmp_path / "flat"
    folder.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("L", (8, 8), color=i * 50).save(folder / f"{i}.png")
    with pytest.raises(DataError, match="needs labelled images"):
        api.train("dcgan", {**TINY, "conditional": "class"}, DataSource(kind="images", path=folder), tmp_path / "b",
                  make_hooks())
    res = api.train("dcgan", {**TINY, "max_steps": 2}, DataSource(kind="images", path=folder), tmp_path / "c",
                    make_hooks())
    assert res.step == 2 and res.samples[0].path.exists() and "eval/fid" in res.metrics
    alone = tmp_path / "alone"
    alone.mkdir()
    Image.new("L", (8, 8)).save(alone / "only.png")  # one image: its FID was NaN at the first evaluation
    with pytest.raises(DataError, match="a dcgan needs at least 2 images"):
        api.train("dcgan", TINY, DataSource(kind="images", path=alone), tmp_path / "d", make_hooks())


def test_conditional_takes_its_names_or_a_boolean_and_a_bad_value_is_named_plainly():
    from genq.core import spec
    from genq.core.errors import ParamError

    params = spec.get("dcgan").train_params
    assert [params({"conditional": v})["conditional"] for v in ("class", True, False)] == ["class", "prompt", "none"]
    with pytest.raises(ParamError) as refused:
        params({"conditional": "banana"})
    assert str(refused.value).endswith("param 'conditional': Input should be 'none', 'class' or 'prompt'")
