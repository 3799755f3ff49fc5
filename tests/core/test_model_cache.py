"""Trained models kept loaded between generation jobs (genq.core.model_cache): the same samples as a fresh
load, a new checkpoint is loaded rather than served from the old entry, and the bounds hold."""

from __future__ import annotations

import os

import pytest

from genq.core import api, checkpoint, model_cache
from genq.core.models.gpt.recipe import GPTRecipe
from genq.core.recipe import fit
from tests.core.conftest import RecordingHooks
from tests.core.test_text_recipes import GPT

SAMPLING = {"num_samples": 2, "max_new_tokens": 20, "seed": 5, "temperature": 0.9}


@pytest.fixture
def loads(monkeypatch):
    """The workdirs whose checkpoint was read, one entry a read; the cache starts empty with its default bounds."""
    model_cache.clear()
    model_cache.configure(4, 2 << 30)
    read = []
    real = checkpoint.load_trained

    def counting(workdir, kind):
        read.append(workdir)
        return real(workdir, kind)
    monkeypatch.setattr(checkpoint, "load_trained", counting)
    yield read
    model_cache.clear()
    model_cache.configure(4, 2 << 30)


def texts(job, out) -> list[str]:
    return [s.text for s in api.generate(job, [None, "All:"], SAMPLING, out, RecordingHooks())]


def trained(text_file, workdir, steps: int = 20):
    api.train("gpt", {**GPT, "max_steps": steps}, text_file, workdir, RecordingHooks())
    return workdir


def test_a_kept_model_samples_what_a_fresh_load_samples(text_file, tmp_path, loads):
    job = trained(text_file, tmp_path / "job")
    first, second = texts(job, tmp_path / "a"), texts(job, tmp_path / "b")
    assert len(loads) == 1, "the second job used the model the first one loaded"
    model_cache.configure(0, 0)  # nothing kept: the job loads the checkpoint afresh
    fresh = texts(job, tmp_path / "c")
    assert len(loads) == 2
    assert first == second == fresh


def test_a_new_checkpoint_is_loaded_not_served_from_the_cache(text_file, tmp_path, loads):
    job = trained(text_file, tmp_path / "job")
    before = texts(job, tmp_path / "a")
    # More training in the same workdir, as a job on another host would leave it (fit, unlike api.train, does not
    # empty this process' cache): LATEST now names step 40.
    fit(GPTRecipe, {**GPT, "max_steps": 40}, text_file, job, RecordingHooks(), "cpu")
    after = texts(job, tmp_path / "b")
    assert len(loads) == 2 and checkpoint.latest_step(job) == 40
    model_cache.configure(0, 0)
    assert after == texts(job, tmp_path / "c") != before


def test_a_checkpoint_rewritten_in_place_changes_its_identity(text_file, tmp_path):
    job = trained(text_file, tmp_path / "job")
    kept = checkpoint.identity(job)
    weights = checkpoint.checkpoint_dir(job) / "step-00000020" / checkpoint.WEIGHTS
    copy = weights.with_name("copy")
    copy.write_bytes(weights.read_bytes())
    os.replace(copy, weights)  # the same bytes in a new file: what a writer replacing the folder leaves
    assert checkpoint.identity(job) not in (kept, None)


def test_the_bounds_and_training_empty_the_cache(text_file, tmp_path, loads):
    a, b = trained(text_file, tmp_path / "a"), trained(text_file, tmp_path / "b")
    model_cache.configure(1, 2 << 30)  # one model: a, b, a loads three times
    for job in (a, b, a):
        texts(job, tmp_path / "out")
    assert loads == [a, b, a]
    model_cache.configure(4, 1)  # no model fits one byte
    texts(a, tmp_path / "out")
    texts(a, tmp_path / "out")
    assert loads[3:] == [a, a]
    model_cache.configure(4, 2 << 30)
    texts(a, tmp_path / "out")
    trained(text_file, tmp_path / "c", steps=2)  # a training job frees the memory the kept models took
    texts(a, tmp_path / "out")
    assert loads[5:] == [a, a]
