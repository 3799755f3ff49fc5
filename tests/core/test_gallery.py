"""The gallery: after every evaluation each model kind draws a few samples (files under
workdir/samples/step-XXXXXXXX/) and hands them to hooks.samples, without changing what training computes."""

from __future__ import annotations

import wave

import pytest
from PIL import Image

from genq.core import api, checkpoint, spec
from genq.core.models._text import TextRecipe
from genq.core.recipe import Recipe, gallery_folder

# Tiny jobs of 4 steps, evaluated (and so drawn) at steps 2 and 4. Dropout on the text models: their
# training then reads the global RNG, which the gallery must leave alone.
PARAMS = {
    "gpt": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4, "dropout": 0.1,
            "lr": 1e-2, "warmup_steps": 0, "eval_iters": 1},
    "gru": {"n_embd": 8, "hidden_size": 16, "n_layer": 2, "block_size": 16, "batch_size": 4, "dropout": 0.1,
            "eval_iters": 1},
    "dcgan": {"conditional": "class", "z_dim": 8, "base_channels": 4, "image_size": 8, "batch_size": 16},
    "vae": {"z_dim": 4, "base_channels": 4, "image_size": 8, "batch_size": 16},
    "wavenet": {"n_layers": 2, "residual_channels": 4, "segment_length": 64, "conditional": True, "batch_size": 2,
                "lr": 2e-2},
}
STEPS = {"max_steps": 4, "eval_interval": 2, "checkpoint_interval": 2}
BUILTIN = {"images": "digits", "audio": "tones"}


pytestmark = pytest.mark.usefixtures("quick_evaluation")


def source(kind: str, text_file) -> api.DataSource:
    data = spec.get(kind).data
    return text_file if data == "text" else api.DataSource(kind=data, builtin=BUILTIN[data])


def train(kind: str, workdir, hooks, text_file) -> api.TrainResult:
    return api.train(kind, {**PARAMS[kind], **STEPS}, source(kind, text_file), workdir, hooks)


def computed(series: dict) -> dict:
    """The series a job computes, without the ones it measures (speed, memory)."""
    return {name: points for name, points in series.items() if not name.startswith(("throughput/", "memory/"))}


@pytest.mark.parametrize("kind", list(PARAMS))
def test_every_evaluation_hands_its_gallery_to_the_hooks(kind, text_file, tmp_path, make_hooks):
    workdir = tmp_path / "job"
    hooks = make_hooks()
    result = train(kind, workdir, hooks, text_file)
    assert [step for step, _ in hooks.galleries] == [2, 4]
    for step, samples in hooks.galleries:
        folder = gallery_folder(workdir, step)
        assert folder == workdir / "samples" / f"step-{step:08d}"
        if kind in ("gpt", "gru"):
            assert [s.kind for s in samples] == ["text"] * 3
            assert all(s.text and s.path is None for s in samples)
        elif kind in ("dcgan", "vae"):
            assert [(s.kind, s.path) for s in samples] == [("image", folder / "grid.png")]
            with Image.open(samples[0].path) as grid:
                assert grid.format == "PNG"
                if kind == "dcgan":  # one column per class (10 digits), three rows
                    assert grid.width * 3 == pytest.approx(grid.height * 10, rel=0.05)
        else:
            assert [(s.kind, s.path) for s in samples] == [("audio", folder / f"clip-{j:03d}.wav") for j in (0, 1)]
            assert samples[0].prompt and samples[1].prompt != samples[0].prompt  # a conditional model: two labels
            for s in samples:
                with wave.open(str(s.path)) as w:
                    assert w.getnframes() > 0 and w.getframerate() == 8000
    # The final samples are what they were: the job's own, outside the step folders.
    assert result.samples
    assert all(s.path is None or s.path.parent == workdir / "samples" for s in result.samples)


@pytest.mark.parametrize("kind", list(PARAMS))
def test_training_computes_the_same_with_and_without_the_gallery(kind, text_file, tmp_path, make_hooks,
                                                                 monkeypatch):
    drawn = make_hooks()
    with_gallery = train(kind, tmp_path / "a", drawn, text_file)
    recipe = spec.get(kind).load_recipe()
    monkeypatch.setattr(recipe, "gallery", Recipe.gallery)  # the default: no gallery
    plain = make_hooks()
    without = train(kind, tmp_path / "b", plain, text_file)
    assert drawn.galleries and not plain.galleries
    assert computed(drawn.series) == computed(plain.series)
    assert [(s.kind, s.text, s.path and s.path.read_bytes()) for s in with_gallery.samples] == \
        [(s.kind, s.text, s.path and s.path.read_bytes()) for s in without.samples]


@pytest.mark.parametrize("kind", list(PARAMS))
def test_a_steps_gallery_depends_only_on_the_weights_at_that_step(kind, text_file, tmp_path, make_hooks):
    # The gallery's generators start from the same seed at every evaluation, so steps compare: drawn again
    # from the step's checkpoint, in a fresh process' worth of state, it is the same.
    workdir = tmp_path / "job"
    hooks = make_hooks()
    train(kind, workdir, hooks, text_file)
    saved = checkpoint.load_latest(workdir, kind)
    assert saved.step == 4
    r = spec.get(kind).load_recipe()(saved.state["params"], "cpu", make_hooks())
    r.build(source(kind, text_file), saved)
    saved.restore(r.modules, r.optimizers)
    again = r.gallery(4, tmp_path / "again")
    drawn = dict(hooks.galleries)
    assert content(again) == content(drawn[4])
    assert content(drawn[2]) != content(drawn[4])  # the weights changed between the two evaluations


def content(samples) -> list[tuple]:
    return [(s.kind, s.prompt, s.text, s.path and s.path.read_bytes()) for s in samples]


@pytest.mark.parametrize("kind", ["gpt", "gru"])
def test_the_last_gallery_decodes_the_final_samples_beside_its_own(kind, text_file, tmp_path, make_hooks,
                                                                      monkeypatch):
    """One pass of the decoder at the end, not two: the final samples come out as finish() draws them alone."""
    calls = []
    decode = TextRecipe._unconditional

    def spy(self, groups):
        calls.append((self, [(n, max_new) for _, n, max_new in groups]))
        return decode(self, groups)

    monkeypatch.setattr(TextRecipe, "_unconditional", spy)
    result = api.train(kind, {**PARAMS[kind], **STEPS, "ema_decay": 0.0}, text_file, tmp_path / "job", make_hooks())
    assert [groups for _, groups in calls] == [[(3, 100)], [(3, 100), (3, 200)]]  # finish() decoded nothing
    recipe = calls[-1][0]
    alone = decode(recipe, [recipe._final_group()])[0]
    assert [s.text for s in result.samples] == alone and len(set(alone)) == 3
