"""Memory estimates: they grow with the model and the batch, and the pool's largest device is the limit."""

from __future__ import annotations

import pytest

from genq.db.models import Worker
from genq.errors import InvalidInput
from genq.jobs.estimate import check_fits, human_bytes, largest_device_memory
from genq.jobs.params import MODELS, validate_train_params


def estimate_train_memory(model: str, params: dict) -> int:
    return MODELS[model].memory_bytes(params)


# a pretrained kind has no defaults to estimate without a base: tests/core/test_hf_causal_lm.py covers it
@pytest.mark.parametrize("model", [m for m, s in MODELS.items() if not s.pretrained])
def test_defaults_are_small_and_bigger_settings_cost_more(model):
    base = validate_train_params(model, {})
    small = estimate_train_memory(model, base)
    assert 2**20 < small < 4 * 2**30  # a default model trains on a laptop
    bigger = validate_train_params(model, {"batch_size": base["batch_size"] * 8})
    assert estimate_train_memory(model, bigger) > small


@pytest.mark.parametrize("model", ["gpt", "gru"])
def test_a_word_vocabulary_is_bounded_by_vocab_size(model):
    # The word tokenizer keeps the vocab_size most frequent words, so a bigger vocab_size costs more.
    small = validate_train_params(model, {"tokenizer": "word", "vocab_size": 1000})
    large = validate_train_params(model, {"tokenizer": "word", "vocab_size": 100_000})
    assert estimate_train_memory(model, large) > estimate_train_memory(model, small) + 1000 * 99_000 * 4


def test_gpt_weights_dominate_a_large_model():
    params = validate_train_params(
        "gpt",
        {
            "n_layer": 48,
            "n_embd": 1600,
            "n_head": 25,
            "batch_size": 1,
            "block_size": 64,
            "tokenizer": "bpe",
            "vocab_size": 50257,
        },
    )
    # GPT-2 XL has ~1.5e9 parameters: 16 bytes each with Adam and 4 for the weights' average, about 31 GB.
    assert 25e9 < estimate_train_memory("gpt", params) < 35e9


def test_limit_comes_from_online_workers_of_the_pool(db, monkeypatch):
    monkeypatch.delenv("GENQ_MAX_JOB_MEMORY_BYTES", raising=False)
    with db.session() as s:
        assert largest_device_memory(s, "default") == (64 * 2**30, "GENQ_MAX_JOB_MEMORY_BYTES")
        monkeypatch.setenv("GENQ_MAX_JOB_MEMORY_BYTES", str(2**30))
        assert largest_device_memory(s, "default")[0] == 2**30
        s.add_all(
            [
                Worker(
                    id="a",
                    hostname="a",
                    pool="gpu",
                    devices=[
                        {"kind": "cuda", "name": "x", "memory_bytes": 8 * 2**30},
                        {"kind": "cuda", "name": "y", "memory_bytes": 24 * 2**30},
                    ],
                ),
                Worker(
                    id="b",
                    hostname="b",
                    pool="gpu",
                    status="stopped",
                    devices=[{"kind": "cuda", "name": "z", "memory_bytes": 80 * 2**30}],
                ),
                Worker(id="c", hostname="c", pool="gpu", devices=["garbage", {"memory_bytes": "lots"}]),
            ]
        )
        s.flush()
        assert largest_device_memory(s, "gpu") == (24 * 2**30, "cuda on worker a")
        huge = validate_train_params("gpt", {"n_layer": 48, "n_embd": 2048, "n_head": 16})
        with pytest.raises(InvalidInput, match=r"needs about .* GiB .* pool 'gpu' \(24.0 GiB"):
            check_fits(s, "gpt", huge, "gpu")
        assert check_fits(s, "gpt", validate_train_params("gpt", {}), "gpu") > 0


def test_human_bytes():
    assert (human_bytes(512), human_bytes(1536), human_bytes(3 * 2**30)) == ("512 B", "1.5 KiB", "3.0 GiB")
