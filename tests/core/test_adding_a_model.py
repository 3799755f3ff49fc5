"""Adding a model kind is adding one folder under genq/core/models/: the registry finds it, the platform's
param checks and memory estimate read its spec, and the shared skeleton trains and resumes it.
The folder here is tests/data/toy_model/bigram, the README's example."""

from __future__ import annotations

from pathlib import Path

import pytest

from genq.core import api, checkpoint, models, spec
from genq.errors import InvalidInput
from genq.jobs.params import validate_train_params

TOY = Path(__file__).parent.parent / "data" / "toy_model"


@pytest.fixture
def with_bigram(monkeypatch):
    """genq.core.models with the bigram folder beside the five kinds."""
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(TOY)])
    spec.registry.cache_clear()
    yield
    spec.registry.cache_clear()


def test_a_new_folder_is_a_new_model_kind(with_bigram, text_file, tmp_path, make_hooks):
    # text kinds first
    assert list(spec.registry()) == ["bigram", "gpt", "gru", "hf-causal-lm", "dcgan", "vae", "wavenet"]
    assert validate_train_params("bigram", {"max_steps": 6})["block_size"] == 8  # the platform's check
    with pytest.raises(InvalidInput, match="unknown param 'n_layer'"):
        validate_train_params("bigram", {"n_layer": 2})
    assert spec.get("bigram").memory_bytes(validate_train_params("bigram", {})) > 256 * 256 * 16

    hooks = make_hooks(stop_at=3, reason="shutdown")
    stopped = api.train("bigram", {"max_steps": 6}, text_file, tmp_path / "job", hooks)
    assert (stopped.step, stopped.stopped) == (3, "shutdown")
    resumed = api.train("bigram", {"max_steps": 6}, text_file, tmp_path / "job", make_hooks())
    assert resumed.step == 6 and checkpoint.load_latest(tmp_path / "job").kind == "bigram"
    samples = api.generate(tmp_path / "job", ["a"], {"max_new_tokens": 3}, tmp_path / "out", make_hooks())
    assert len(samples[0].text) == 4


def test_without_the_folder_the_kind_is_unknown():
    known = "gpt, gru, hf-causal-lm, dcgan, vae, wavenet"
    with pytest.raises(InvalidInput, match=rf"unknown model 'bigram' \(known: {known}\)"):
        validate_train_params("bigram", {})
