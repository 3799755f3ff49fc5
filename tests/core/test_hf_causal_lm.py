"""hf-causal-lm without the platform: a tiny random GPT-2 saved with save_pretrained is fine-tuned on text with its
own tokenizer (loss falls), resumes exactly, and generates offline with its KV cache, per-row seeded."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from genq.core import api, base_models, checkpoint, spec
from genq.core.errors import ParamError
from tests.hf_tiny import CORPUS

pytestmark = pytest.mark.usefixtures("offline")

TINY = dict(base="tiny", block_size=32, batch_size=8, lr=3e-3, eval_interval=20, eval_iters=4,
            checkpoint_interval=20, warmup_steps=5)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def models(tmp_path, tiny_gpt2):
    """A models folder holding a copy of the tiny GPT-2 as "tiny", configured for this test."""
    folder = tmp_path / "models"
    shutil.copytree(tiny_gpt2, folder / "tiny")
    base_models.configure(folder)
    yield folder
    base_models._root = None


@pytest.fixture
def corpus_file():
    return api.DataSource(kind="text", path=CORPUS)


def test_fine_tuning_lowers_the_loss_and_generates(models, corpus_file, tmp_path, make_hooks):
    hooks = make_hooks()
    result = api.train("hf-causal-lm", {**TINY, "max_steps": 60, "eval_interval": 10}, corpus_file,
                       tmp_path / "job", hooks)
    assert result.step == 60 and result.stopped is None
    val = [v for _, v in hooks.series["val/loss"]]
    assert val[-1] < val[0] - 0.5 and val[-1] < math.log(320) - 1, val  # random weights score ln(vocab) = 5.8
    assert len(result.samples) == 3 and all(s.text for s in result.samples)
    ckpt = checkpoint.load_latest(tmp_path / "job", "hf-causal-lm")
    assert ckpt.config["base"] == "tiny" and ckpt.config["hf_config"]["model_type"] == "gpt2"
    assert "tokenizer.json" in ckpt.state["tokenizer_files"]

    shutil.rmtree(models / "tiny")  # the checkpoint carries the network config and the tokenizer: no base needed
    params = {"num_samples": 3, "max_new_tokens": 20, "seed": 7, "temperature": 0.9, "top_k": 50, "top_p": 0.95}
    samples = api.generate(tmp_path / "job", ["ROMEO:", None], params, tmp_path / "out", make_hooks())
    assert [s.prompt for s in samples] == ["ROMEO:"] * 3 + [None] * 3
    assert all(s.text.startswith("ROMEO:") and len(s.text) > len("ROMEO:") for s in samples[:3])
    again = api.generate(tmp_path / "job", ["ROMEO:"], {**params, "num_samples": 1}, tmp_path / "out2", make_hooks())
    assert again[0].text == samples[0].text  # a row's text does not depend on how many rows were drawn with it


def test_a_stopped_job_resumes_where_it_stopped(models, corpus_file, tmp_path, make_hooks):
    p = {**TINY, "max_steps": 12, "checkpoint_interval": 5, "eval_interval": 6}
    api.train("hf-causal-lm", p, corpus_file, tmp_path / "a", make_hooks())
    stopped = api.train("hf-causal-lm", p, corpus_file, tmp_path / "b", make_hooks(stop_at=7, reason="shutdown"))
    assert (stopped.step, stopped.stopped) == (7, "shutdown")
    hooks = make_hooks()
    resumed = api.train("hf-causal-lm", p, corpus_file, tmp_path / "b", hooks)
    assert resumed.step == 12 and "resumed from the checkpoint at step 7" in hooks.lines
    a = checkpoint.load_latest(tmp_path / "a").tensors["model"]
    b = checkpoint.load_latest(tmp_path / "b").tensors["model"]
    assert a.keys() == b.keys()
    for key in a:  # data position, dropout RNG and AdamW moments all restored: the same weights
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_generate_from_the_base_directly(models, tmp_path, make_hooks):
    params = {"num_samples": 2, "max_new_tokens": 100, "seed": 3}  # 100 tokens: past the 64-token window
    samples = api.generate_from_base("hf-causal-lm", "tiny", ["To be"], params, tmp_path / "out", make_hooks())
    assert len(samples) == 2 and samples[0].text != samples[1].text
    assert all(s.text.startswith("To be") for s in samples)
    with pytest.raises(ParamError, match="not found"):
        api.generate_from_base("hf-causal-lm", "missing", ["x"], params, tmp_path / "out", make_hooks())
    with pytest.raises(ParamError, match="does not sample a pretrained base"):
        api.generate_from_base("gpt", "tiny", ["x"], params, tmp_path / "out", make_hooks())


def test_a_base_stays_loaded_until_its_files_change(models, tmp_path, make_hooks, monkeypatch):
    from genq.core import model_cache
    from genq.core.models.hf_causal_lm import recipe

    loads = []
    original = recipe.load_pretrained
    monkeypatch.setattr(recipe, "load_pretrained", lambda folder, **kw: loads.append(folder) or original(folder, **kw))
    model_cache.clear()
    params = {"max_new_tokens": 5, "seed": 1}
    first = api.generate_from_base("hf-causal-lm", "tiny", ["To be"], params, tmp_path / "a", make_hooks())
    second = api.generate_from_base("hf-causal-lm", "tiny", ["To be"], params, tmp_path / "b", make_hooks())
    assert len(loads) == 1 and first[0].text == second[0].text
    config = models / "tiny" / "config.json"
    config.write_text(config.read_text())  # rewritten in place: a new inode or modification time
    api.generate_from_base("hf-causal-lm", "tiny", ["To be"], params, tmp_path / "c", make_hooks())
    assert len(loads) == 2
    model_cache.clear()


def test_rows_honor_max_new_tokens_and_their_own_seed(models):
    from genq.core.models.hf_causal_lm.recipe import load_pretrained
    from genq.core.models.hf_causal_lm.sampling import sample_rows

    net = load_pretrained(models / "tiny").eval()
    rows = sample_rows(net, [5, 6, 7], [11, 12, 13], "cpu", max_new_tokens=90)  # window 64: the cache restarts
    assert [len(r) for r in rows] == [90, 90, 90]
    alone = sample_rows(net, [5, 6, 7], [12], "cpu", max_new_tokens=90)
    assert alone[0] == rows[1]  # row 1 alone, or between two neighbours: the same tokens
    greedy = sample_rows(net, [5, 6, 7], [1, 2], "cpu", max_new_tokens=10, top_k=1)
    assert greedy[0] == greedy[1]
    # the cached decode agrees with re-reading the whole sequence (no cache) under greedy sampling
    ids = torch.tensor([[5, 6, 7]])
    for _ in range(10):
        ids = torch.cat([ids, net(input_ids=ids, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    assert ids[0, 3:].tolist() == greedy[0]


def test_params_name_a_causal_lm_inside_the_models_folder(models, tmp_path):
    hf = spec.get("hf-causal-lm")
    with pytest.raises(ParamError, match=r"block_size \(128\) exceeds the context window of base 'tiny' \(64"):
        hf.train_params({"base": "tiny"})
    assert hf.train_params({"base": "tiny", "block_size": 64})["base"] == "tiny"
    with pytest.raises(ParamError, match="param 'base': Field required"):
        hf.train_params({"block_size": 32})
    outside = tmp_path / "outside"
    shutil.copytree(models / "tiny", outside)
    (models / "escape").symlink_to(outside)  # a folder symlinked out
    (models / "leaky").mkdir()
    for f in (models / "tiny").iterdir():
        (models / "leaky" / f.name).symlink_to(outside / f.name)  # files symlinked out
    (models / "inside").symlink_to(models / "tiny")  # a symlink that stays inside is fine
    (models / "bert").mkdir()
    (models / "bert" / "config.json").write_text('{"model_type": "bert", "architectures": ["BertForMaskedLM"]}')
    (models / "empty").mkdir()
    refused = {
        "../outside": "is not a folder name", "/etc": "is not a folder name", "a/b": "is not a folder name",
        "..": "is not a folder name", ".hidden": "is not a folder name", "escape": "resolves outside",
        "leaky": "is a symlink out of the models folder", "bert": "is not a causal language model",
        "empty": "has no config.json", "nowhere": "not found in the models folder",
    }
    for base, reason in refused.items():
        with pytest.raises(ParamError, match=reason):
            hf.train_params({"base": base, "block_size": 32})
    assert base_models.resolve("inside") == (models / "tiny").resolve()


def test_the_estimate_and_the_listing_read_the_folder(models, tiny_gpt2):
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(tiny_gpt2, local_files_only=True)
    actual = sum(p.numel() for p in net.parameters())  # tied head counted once, as safetensors stores it
    hf = spec.get("hf-causal-lm")
    p = hf.train_params({"base": "tiny", "block_size": 32})
    assert hf.estimate(p)[0] == actual
    config = base_models.read_config(models / "tiny", "tiny")
    assert abs(base_models.parameter_count(models / "nowhere", config) - actual) < 0.1 * actual  # from config.json
    assert hf.memory_bytes({**p, "batch_size": 64}) > hf.memory_bytes(p)
    (models / "notes").mkdir()
    listed = {m["name"]: m for m in base_models.list_models(models)}
    assert listed["tiny"]["model_type"] == "gpt2" and listed["tiny"]["causal_lm"] is True
    assert listed["tiny"]["parameters"] == actual and listed["tiny"]["size_bytes"] > actual * 4
    assert listed["notes"]["error"].startswith("base 'notes' has no config.json")


def test_the_corpus_is_tokenized_a_piece_at_a_time_as_a_whole(models, corpus_file, make_hooks, monkeypatch):
    from transformers import AutoTokenizer

    from genq.core.models.hf_causal_lm import recipe as hf

    pieces = hf.text_pieces
    monkeypatch.setattr(hf, "text_pieces", lambda text, chars: pieces(text, 300))
    text = CORPUS.read_text(encoding="utf-8")
    assert len(list(hf.text_pieces(text, 0))) > 5
    r = hf.HFCausalLMRecipe(spec.get("hf-causal-lm").train_params({**TINY, "max_steps": 1}), "cpu", make_hooks())
    r.build(corpus_file, None)
    whole = AutoTokenizer.from_pretrained(models / "tiny")(text, add_special_tokens=False)["input_ids"]
    assert torch.cat([r.ds.train, r.ds.val]).tolist() == whole


def _rows(lines: list[dict]):
    from genq.core.data.prompts import parse_prompts

    return parse_prompts("".join(json.dumps(line) + "\n" for line in lines).encode(), "jsonl")


def _generate_rows(rows, params, make_hooks, **hooks_args) -> tuple[bool, dict, object]:
    """generate_rows_from_base of the usable rows: (finished, {index: RowResult}, the hooks)."""
    hooks, seen = make_hooks(**hooks_args), []
    hooks.rows = seen.extend
    done = api.generate_rows_from_base("hf-causal-lm", "tiny", [r for r in rows if r.error is None], params, hooks)
    return done, {r.index: r for r in seen}, hooks


def test_prompt_rows_take_their_own_seed_length_stop_and_batch(models, make_hooks):
    lines = [{"id": "a", "prompt": "ROMEO:", "seed": 4, "max_new_tokens": 30},
             {"prompt": "JULIET: no", "max_new_tokens": 10, "temperature": 0.7, "top_k": 20},
             {"prompt": "ROMEO:", "seed": 4, "max_new_tokens": 30},
             {"prompt": "ROMEO:", "seed": 4, "max_new_tokens": 6},
             {"prompt": "x " * 80, "max_new_tokens": 3, "top_p": 0.9},
             {"prompt": None}]
    done, out, hooks = _generate_rows(_rows(lines), {"seed": 9, "num_samples": 2}, make_hooks)
    assert done and sorted(out) == list(range(10))  # the bad row is the worker's to report: not generated here
    assert all(r.status == "ok" and r.text.startswith(r.prompt) for r in out.values())
    assert out[0].row_id == "a" and out[0].row == 0 and out[2].row == 1 and out[2].row_id is None
    assert [out[0].text, out[1].text] == [out[4].text, out[5].text] and out[0].text != out[1].text  # row seeds
    assert [out[i].tokens for i in (6, 7)] == [6, 6] and out[0].text.startswith(out[6].text)  # max_new_tokens
    assert [out[i].tokens for i in (2, 3, 8, 9)] == [10, 10, 3, 3]
    assert "the prompt's 160 tokens were truncated from the left to the model's context of 64" in out[8].error
    assert hooks.series["throughput/rows_per_s"] and hooks.series["throughput/tokens_per_s"]

    # In another order, one row at a time, beside other rows: a row with its own seed draws the same text; the
    # others too at the same row numbers. A stop string ends a row before it.
    new = out[0].text[len("ROMEO:"):]
    stop = new[len(new) // 2:][:2]
    shuffled = _rows([lines[3], lines[1], {**lines[0], "stop": stop}, lines[2], {"prompt": "other", "seed": 1}])
    _, again, _ = _generate_rows(shuffled, {"seed": 9, "num_samples": 2, "batch_size": 1}, make_hooks)
    assert [again[i].text for i in (0, 1, 6, 7)] == [out[i].text for i in (6, 7, 4, 5)]
    assert again[4].text == "ROMEO:" + new[:new.find(stop)] and again[4].tokens < 30
    _, ordered, _ = _generate_rows(_rows(lines), {"seed": 9, "num_samples": 2, "batch_size": 3}, make_hooks)
    assert {i: r.text for i, r in ordered.items()} == {i: r.text for i, r in out.items()}


def test_prompt_rows_stop_when_asked_and_report_what_finished(models, make_hooks):
    rows = _rows([{"prompt": f"Row {i}", "max_new_tokens": 40} for i in range(6)])
    done, out, hooks = _generate_rows(rows, {"seed": 1, "batch_size": 1}, make_hooks, stop_at=6)
    assert not done and 1 <= len(out) < 6, len(out)  # stopped part-way: the finished rows were reported
    assert sorted(r.row for r in out.values()) == list(range(len(out)))


def test_a_sampled_nul_byte_is_not_stored_as_nul(models):
    from genq.core.models.hf_causal_lm.recipe import decoded, load_tokenizer

    tok = load_tokenizer(models / "tiny")
    nul = tok.convert_tokens_to_ids("\u0100")  # the byte-level alphabet's letter for byte 0
    assert tok.decode([nul]) == "\x00"
    assert decoded(tok, tok.encode("To be") + [nul]) == "To be\ufffd"  # PostgreSQL text refuses NUL
