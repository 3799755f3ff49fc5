"""genq.core.batch: continuous batching gives each row the text it would get alone, whatever ran beside it."""

from __future__ import annotations

import random

import pytest
import torch

from genq.core.batch import BatchGenerator, Request, choose_slots, sample_rows
from genq.core.models.gpt import slots
from genq.core.models.gpt.net import GPT, GPTConfig
from genq.core.models.gru.net import GRULM, GRUConfig

VOCAB = 20


def gpt(block_size: int = 16, n_head: int = 2) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=block_size, n_layer=2, n_head=n_head, n_embd=16)).eval()


def gpt_one_head() -> GPT:
    return gpt(n_head=1)


def gru() -> GRULM:
    torch.manual_seed(0)
    return GRULM(GRUConfig(vocab_size=VOCAB, n_embd=8, hidden_size=16, n_layer=2)).eval()


def requests(n: int = 40, seed: int = 0) -> list[Request]:
    """Rows of different prompt lengths (some past the window), lengths and sampling settings."""
    rnd = random.Random(seed)
    return [Request(key=i, prompt=[rnd.randrange(VOCAB) for _ in range(rnd.randrange(1, 24))],
                    max_new_tokens=rnd.randrange(1, 40), seed=1000 + i, temperature=rnd.choice([0.7, 1.0, 1.5]),
                    top_k=rnd.choice([None, 3]), top_p=rnd.choice([None, 0.8])) for i in range(n)]


def run(model, rows: list[Request], slots: int, continuous: bool = True, **kwargs) -> dict:
    out = {}
    engine = BatchGenerator(model, slots, continuous=continuous, **kwargs)
    assert engine.run(rows, lambda f: out.__setitem__(f.key, (f.tokens, f.text, f.reason)))
    assert len(out) == len(rows)
    return out


@pytest.mark.parametrize("make", [gpt, gpt_one_head, gru])
def test_rows_are_identical_at_batch_1_7_and_32(make):
    model, rows = make(), requests()
    alone = run(model, rows, 1)
    assert run(model, rows, 7) == alone
    assert run(model, rows, 32) == alone
    assert run(model, list(reversed(rows)), 7) == alone  # other neighbours, other order
    assert run(model, rows, 32, continuous=False) == alone
    assert all(len(alone[r.key][0]) == r.max_new_tokens for r in rows)


@pytest.mark.parametrize("make", [gpt, gru])
def test_a_row_draws_its_tokens_with_its_own_uniforms_in_order(make):
    """What the engine computes for a row, written out as one loop: the model's logits for the text so far, then
    sample_rows with the row's next uniform from torch.rand(max_new_tokens) seeded by the row's seed."""
    model = make()
    rows = [Request(key=i, prompt=[i + 1, 2, 3], max_new_tokens=12, seed=7 + i, temperature=0.9) for i in range(5)]
    got = run(model, rows, 3)
    for row in rows:
        uniforms = torch.rand(row.max_new_tokens, generator=torch.Generator().manual_seed(row.seed))
        text, tokens = list(row.prompt), []
        for u in uniforms:
            logits = model(torch.tensor([text]))[0][:, -1]  # (1, vocab)
            token = sample_rows(logits, torch.tensor([[row.temperature]]), torch.tensor([[VOCAB]]),
                                torch.tensor([[2.0]]), u[None], filtered=False)
            tokens.append(int(token))
            text.append(int(token))
        assert got[row.key][0] == tokens, row.key


def test_a_seed_past_64_bits_decodes_with_its_low_64_bits():
    """A row's seed derived from a user's (a gallery's seed x 1,000,003 + row) may pass what a generator takes."""
    model, big = gpt(), (2**63 - 1) * 1_000_003 + 2
    out = run(model, [Request("big", [1, 2], 5, seed=big), Request("low", [1, 2], 5, seed=big % 2**64)], 2)
    assert out["big"] == out["low"]


def test_the_seed_decides_the_text():
    model, rows = gpt(), requests(8)
    again = [Request(**{**r.__dict__, "seed": r.seed + 1}) for r in rows]
    assert run(model, rows, 4) != run(model, again, 4)


@pytest.mark.parametrize("n_head", [1, 2])
def test_slot_cache_matches_the_full_forward_past_the_window(n_head):
    """decode_slots' logits are the model's own forward over the whole text, also once the ring has wrapped."""
    model = gpt(block_size=8, n_head=n_head)
    text = torch.randint(0, VOCAB, (1, 30))
    full, _ = model(text)
    cache = model.new_slots(3, "cpu", torch.float32, 30)
    prompt = text[0, :5].tolist()
    logits = model.prefill_slots(cache, [1], [prompt])
    assert torch.allclose(logits[0], full[0, 4], atol=1e-5)
    for pos in range(5, 29):
        tokens = torch.tensor([0, int(text[0, pos]), 0])
        logits = model.decode_slots(cache, tokens, torch.tensor([0, pos, 0]), min(pos + 1, 8))
        assert torch.allclose(logits[1], full[0, pos], atol=1e-4), pos


def test_the_untraced_step_with_a_bfloat16_cache_under_autocast_matches_the_forward():
    """What a GPU runs (the step is traced only on a CPU in float32): a bfloat16 cache, under autocast."""
    model = gpt(block_size=8)
    text = torch.randint(0, VOCAB, (1, 20))
    full, _ = model(text)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cache = model.new_slots(2, "cpu", torch.bfloat16, 20)
        assert not isinstance(cache.step, torch.jit.ScriptFunction) and cache.graphs is None  # graphs: CUDA only
        model.prefill_slots(cache, [0], [text[0, :3].tolist()])
        for pos in range(3, 19):
            logits = model.decode_slots(cache, torch.stack([text[0, pos], text[0, 0]]), torch.tensor([pos, 0]),
                                        min(pos + 1, 8))
            assert torch.allclose(logits[0].float(), full[0, pos], atol=0.01), pos  # bf16: ~1e-3 here


def test_reading_keys_past_a_rows_position_changes_nothing():
    """What a GPU's CUDA graphs rely on (SlotCache.decode reads a power of two of keys there): the keys past a
    row's position are hidden, so the logits are those of the exact width."""
    model = gpt(block_size=16)
    text = torch.randint(0, VOCAB, (1, 12))
    cache = model.new_slots(1, "cpu", torch.float32, 12)
    cache.kv.normal_()  # stale keys and values, as a slot holds after an earlier row
    model.prefill_slots(cache, [0], [text[0, :3].tolist()])
    for pos in range(3, 11):
        tokens, where = text[0, pos:pos + 1], torch.tensor([pos])
        exact = cache.step(cache.kv, cache.rope, cache.hidden[:, :pos + 1], cache.rows, tokens, where)
        wide = cache.step(cache.kv, cache.rope, cache.hidden, cache.rows, tokens, where)
        assert torch.allclose(exact, wide, atol=1e-6), pos


def test_continuous_batching_takes_fewer_steps_than_static_batches():
    model = gpt()
    rows = [Request(i, [1, 2], 2 if i % 4 else 30, seed=i) for i in range(32)]
    steps = {}
    for continuous in (True, False):
        engine = BatchGenerator(model, 8, continuous=continuous)
        engine.run(rows, lambda f: None)
        steps[continuous] = engine.steps
    assert steps[True] < 0.6 * steps[False], steps


def test_stop_strings_and_eos_end_rows():
    model = gpt()
    decode = "".join(chr(97 + i) for i in range(VOCAB)).__getitem__

    def text_of(ids):
        return "".join(decode(i) for i in ids)

    free = run(model, [Request(0, [1], 30, seed=5)], 1, decode=text_of)[0]
    stop = free[1][3:5]  # two letters the free run drew
    cut = run(model, [Request(0, [1], 30, seed=5, stop=[stop])], 1, decode=text_of)[0]
    assert cut[2] == "stop" and cut[1] == free[1][:free[1].index(stop)]
    first = free[0][2]
    ended = run(model, [Request(0, [1], 30, seed=5)], 1, eos_id=first, decode=text_of)[0]
    assert ended[2] == "eos" and first not in ended[0]


def test_a_stop_request_drops_the_rows_not_finished():
    model, rows, seen = gpt(), requests(10), []
    calls = iter(range(100))
    done = BatchGenerator(model, 4).run(rows, seen.append, should_stop=lambda: next(calls) >= 5)
    assert done is False and len(seen) < len(rows)


def test_sample_rows_keeps_to_top_k_and_top_p():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 3)
    u = torch.tensor([0.999, 0.999, 0.999])
    top_k, top_p = torch.tensor([[4], [2], [4]]), torch.tensor([[1.0], [1.0], [0.5]])
    picked = sample_rows(logits, torch.ones(3, 1), top_k, top_p, u)
    assert picked.tolist() == [3, 1, 0]  # all four; the top two; the nucleus holding half the mass: one
    tiny = torch.tensor([[1e-300]], dtype=torch.float64).float()  # 0 in float32: the most likely token still
    assert sample_rows(torch.tensor([[1.0, 3.0, 2.0]]), torch.ones(1, 1), torch.tensor([[3]]), tiny,
                       torch.tensor([0.999])).tolist() == [1]


def test_a_row_without_top_k_or_top_p_draws_the_same_whatever_its_neighbours_filter():
    """The sort that top_k and top_p need runs for the whole batch once one row has them; the other rows'
    tokens must not change with it (their texts would depend on their neighbours)."""
    torch.manual_seed(0)
    logits, u = torch.randn(64, VOCAB) * 3, torch.rand(64)
    temperature, top_k, top_p = torch.full((64, 1), 0.8), torch.full((64, 1), VOCAB), torch.full((64, 1), 2.0)
    plain = sample_rows(logits, temperature, top_k, top_p, u, filtered=False)
    assert torch.equal(sample_rows(logits, temperature, top_k, top_p, u, filtered=True), plain)
    top_k[::2] = 3  # half the rows filter now: the others keep their tokens
    mixed = sample_rows(logits, temperature, top_k, top_p, u, filtered=True)
    assert torch.equal(mixed[1::2], plain[1::2])
    assert all(int(t) in row.topk(3).indices.tolist() for row, t in zip(logits[::2], mixed[::2].tolist()))


def decodes_as_its_forward(model: GPT, text: torch.Tensor) -> None:
    """Decoding text (1, 12) after its first 4 tokens gives the logits the model's forward gives."""
    full, _ = model(text)
    cache = model.new_slots(1, "cpu", torch.float32, 12)
    model.prefill_slots(cache, [0], [text[0, :4].tolist()])
    for pos in range(4, 11):
        logits = model.decode_slots(cache, text[0, pos:pos + 1], torch.tensor([pos]), pos + 1)
        assert torch.allclose(logits[0], full[0, pos], atol=1e-4), pos


def test_decoding_follows_weights_changed_after_a_first_run():
    """The traced step is kept per model: weights changed in place (an optimizer step) or replaced (a load onto
    new tensors) are what the next run decodes with."""
    model = gpt()
    text = torch.randint(0, VOCAB, (1, 12))
    for change in (lambda p: p.mul_(1.5), lambda p: setattr(p, "data", p.data.clone().add_(0.01))):
        model.decode_slots(model.new_slots(1, "cpu", torch.float32, 12), text[0, :1], torch.tensor([0]), 1)
        with torch.no_grad():
            for p in model.parameters():
                change(p)
        decodes_as_its_forward(model, text)


@pytest.mark.parametrize("trained", [True, False])
def test_models_of_one_shape_decode_their_own_weights_on_one_trace(trained, monkeypatch):
    """The traced step takes the weights as inputs: weights changed in place after a first run (as by training),
    and another model of the same shape, decode on the same trace, each exactly as its model's forward does. A
    fresh model's norms are all ones (a trace holding weights as constants pooled them into one)."""
    traces = []
    trace = torch.jit.trace
    monkeypatch.setattr(slots, "_TRACES", {})
    monkeypatch.setattr(torch.jit, "trace", lambda *args, **kwargs: traces.append(args) or trace(*args, **kwargs))

    model, other = gpt(), gpt()
    if trained:
        with torch.no_grad():  # no two weights equal, as after any training
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    text = torch.randint(0, VOCAB, (1, 12))
    model.decode_slots(model.new_slots(1, "cpu", torch.float32, 12), text[0, :1], torch.tensor([0]), 1)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + 0.2 * torch.randn_like(p))  # each weight differently
    decodes_as_its_forward(model, text)
    decodes_as_its_forward(other, text)
    assert len(traces) == 1
    gpt(block_size=24).new_slots(1, "cpu", torch.float32, 12)  # another shape: a trace of its own
    assert len(traces) == 2


def test_only_the_latest_traces_are_kept(monkeypatch):
    """A worker keeps TRACES_KEPT traced steps, the most recently used: a shape pushed out is traced again."""
    traces = []
    trace = torch.jit.trace
    monkeypatch.setattr(slots, "_TRACES", {})
    monkeypatch.setattr(slots, "TRACES_KEPT", 2)
    monkeypatch.setattr(torch.jit, "trace", lambda *args, **kwargs: traces.append(args) or trace(*args, **kwargs))
    for block_size in (16, 24, 16, 32):  # a new model each time (a model keeps its own step): 16 used again, so
        gpt(block_size=block_size).new_slots(1, "cpu", torch.float32, 12)  # 32 pushes out 24
    assert len(traces) == 3 and len(slots._TRACES) == 2
    gpt(block_size=24).new_slots(1, "cpu", torch.float32, 12)  # traced again; pushes out 16
    assert len(traces) == 4 and len(slots._TRACES) == 2
    decodes_as_its_forward(gpt(block_size=16), torch.randint(0, VOCAB, (1, 12)))
    assert len(traces) == 5


def test_a_small_model_decodes_on_one_thread_and_gives_the_threads_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        BatchGenerator(gpt(), 4).run(requests(6), lambda row: seen.append(torch.get_num_threads()))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_choose_slots_follows_memory_and_caps():
    model = gpt()
    assert choose_slots(model, "cpu", rows=5) == 5
    assert choose_slots(model, "cpu", rows=1000, cap=7) == 7
    assert 1 <= choose_slots(model, "cpu", rows=10**6) <= 256


@pytest.mark.parametrize("model, params", [
    ("gpt", {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16}),
    ("gru", {"n_embd": 16, "hidden_size": 48, "block_size": 16}),
])
def test_recipe_rows_are_byte_identical_at_batch_sizes_1_7_and_32(model, params, text_file, tmp_path, make_hooks):
    """Through core.api.generate_rows (what the worker calls): per-row params, a row's own seed, a prompt past
    the context, num_samples; the same texts whatever the batch size."""
    from genq.core import api
    from genq.core.data.prompts import PromptRow

    train = {**params, "batch_size": 8, "lr": 3e-3, "max_steps": 10, "eval_interval": 10, "eval_iters": 2}
    api.train(model, train, text_file, tmp_path / "job", make_hooks())
    rows = [PromptRow(i, "All:" * (i % 9), f"r{i}", {"max_new_tokens": 5 + i % 23}) for i in range(40)]
    rows[3].params["seed"] = 99
    rows[5] = PromptRow(5, None, error="row 5: bad")
    rows[6] = PromptRow(6, "\u00ff\u6f22", "r6")  # characters the corpus never had: this row's error, not the job's
    texts = {}
    for batch_size in (1, 7, 32):
        hooks, seen = make_hooks(), []
        hooks.rows = seen.extend
        assert api.generate_rows(tmp_path / "job", rows, {"num_samples": 2, "seed": 4, "batch_size": batch_size},
                                 hooks)
        texts[batch_size] = sorted((r.index, r.row, r.row_id, r.text, r.error) for r in seen)
    assert texts[1] == texts[7] == texts[32]
    indexes = [i for r in range(40) if r != 5 for i in ((12,) if r == 6 else (2 * r, 2 * r + 1))]
    assert [t[0] for t in texts[1]] == indexes
    by_index = {t[0]: t for t in texts[1]}
    assert by_index[12][3] is None and "row 6: text contains characters the model was not trained on" in by_index[12][4]
    assert by_index[6][3] != by_index[7][3]  # two samples of a row differ
    assert all(by_index[2 * r][3].startswith("All:" * (r % 9)) for r in range(40) if r not in (5, 6))
    long_row = 8  # 32 characters of prompt: past the gpt's 16-token context; a gru reads any length
    assert ("truncated from the left" in (by_index[2 * long_row][4] or "")) == (model == "gpt")


def test_a_failed_cuda_graph_capture_falls_back_to_the_eager_step(monkeypatch):
    """What a GPU does when a capture fails (slots._Graphs; CUDA-only, so the capture is made to fail here):
    the step runs eagerly, with a warning, and no capture is tried again."""
    from genq.core.models.gpt import slots

    model = gpt(block_size=8)
    cache = model.new_slots(1, "cpu", torch.float32, 8)
    graphs = slots._Graphs(cache.step)
    tries = []

    def capture(*args):
        tries.append(args)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "_capture", capture)
    tokens, pos = torch.tensor([3]), torch.tensor([0])
    expected = cache.step(cache.kv, cache.rope, cache.hidden[:, :1], cache.rows, tokens, pos)
    with pytest.warns(UserWarning, match="without CUDA graphs"):
        first = graphs.run(cache.kv, cache.rope, cache.hidden[:, :1], cache.rows, tokens, pos)
    second = graphs.run(cache.kv, cache.rope, cache.hidden[:, :1], cache.rows, tokens, pos)
    assert torch.equal(first, expected) and torch.equal(second, expected) and len(tries) == 1
