"""Tokenizers, text loading and the text dataset."""

from __future__ import annotations

import inspect
import sys

import pytest
import torch

from genq.core.api import DataError, DataSource
from genq.core.data import text as text_module
from genq.core.data.builtin_text import pydoc_text
from genq.core.data.text import (
    BPETokenizer,
    CharTokenizer,
    TextData,
    WordTokenizer,
    build_tokenizer,
    continued,
    load_text,
    tokenizer_from_state,
)
from genq.core.eval.text import val_loss


def test_char_round_trip_and_unknown_chars_named(corpus):
    TEXT = corpus
    tok = build_tokenizer("char", TEXT)
    assert tok.vocab_size == len(set(TEXT))
    assert tok.decode(tok.encode(TEXT[:200])) == TEXT[:200]
    again = tokenizer_from_state(tok.to_state())
    assert again.encode(TEXT[:50]) == tok.encode(TEXT[:50])
    with pytest.raises(DataError, match="'Z'.*'é'|'é'.*'Z'"):
        tok.encode("Zé")


def test_word_vocab_specials_and_counts():
    tok = WordTokenizer.train("b a a c b a <EOS>", 100)
    assert tok.itos[:6] == ["<PAD>", "<EOS>", "<UNK>", "a", "b", "c"]  # by count, ties alphabetical
    assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
    assert tok.encode("A b zebra <EOS>") == [3, 4, 2, 1]
    assert tok.decode([3, 0, 4, 2, 1]) == "a b <UNK> <EOS>"


def test_word_round_trip_with_punctuation_and_newlines(corpus):
    tok = build_tokenizer("word", corpus)
    line = "All:\nSpeak, speak.\n"
    assert tok.decode(tok.encode(line)) == line.lower()
    assert tokenizer_from_state(tok.to_state()).itos == tok.itos


def test_a_prompt_and_the_words_generated_after_it_are_spaced_as_the_tokenizer_writes_them(corpus):
    word, char = build_tokenizer("word", corpus), build_tokenizer("char", corpus)
    assert continued(word, "To be", "or not") == "To be or not"
    assert continued(word, "To be", ", or not") == "To be, or not"
    assert continued(word, "Speak:\n", "all") == "Speak:\nall"
    assert continued(char, "To b", "e") == "To be"


def test_bpe_trains_to_size_and_round_trips_any_text(corpus):
    tok = build_tokenizer("bpe", corpus, vocab_size=300)
    assert isinstance(tok, BPETokenizer)
    assert 256 < tok.vocab_size <= 300
    s = "Speak, speak. Unseen: naïve 東京 ✓\n"
    assert tok.decode(tok.encode(s)) == s
    assert len(tok.encode("First Citizen")) < len("First Citizen")  # merges were learned
    again = tokenizer_from_state(tok.to_state())
    assert again.encode(s) == tok.encode(s)


def test_a_corpus_encodes_as_its_text_does_with_every_tokenizer(corpus):
    text = corpus + "naïve 東京 🙂\n"
    char = build_tokenizer("char", text)
    assert char.chars == sorted(set(text))  # counted in numpy, the same vocabulary in the same order
    for tok in (char, build_tokenizer("word", text), build_tokenizer("bpe", text, vocab_size=300)):
        assert tok.encode_corpus(text).tolist() == tok.encode(text), tok.name
    with pytest.raises(DataError, match="'Z'.*'🙃'"):
        build_tokenizer("char", "abc").encode_corpus("abcZ🙃a")


def test_the_word_tokenizer_reads_a_corpus_in_pieces_as_a_whole(corpus, monkeypatch):
    whole = WordTokenizer.train(corpus, 300)
    ids = whole.encode(corpus)
    pieces = text_module.text_pieces
    monkeypatch.setattr(text_module, "text_pieces", lambda text: pieces(text, 200))
    assert len(list(text_module.text_pieces(corpus))) > 5
    assert WordTokenizer.train(corpus, 300).itos == whole.itos
    assert whole.encode_corpus(corpus).tolist() == ids


def test_text_data_holds_narrow_ids_and_cuts_int64_rows():
    small, wide = TextData(list(range(50)) * 20, 8, 4, 0), TextData(list(range(40_000)), 8, 4, 0)
    assert (small.train.dtype, wide.train.dtype) == (torch.int16, torch.int32)
    x, y = wide.get_batch()
    assert x.dtype == y.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
    assert int(wide.train.max()) == 35_999  # above int16's range, held exactly


def test_val_batches_regrouped_are_the_same_rows():
    ds = TextData(list(range(50)) * 20, block_size=8, batch_size=4, seed=0)
    batches, groups = ds.val_batches(3), ds.val_batches(3, rows=5)
    assert [len(x) for x, _ in groups] == [5, 5, 2]
    for i in (0, 1):
        assert torch.equal(torch.cat([b[i] for b in batches]), torch.cat([g[i] for g in groups]))

    class RowMean(torch.nn.Module):  # a "loss" that differs from row to row: the groups' sizes must weigh in
        def forward(self, x, y):
            return None, x.float().mean()

    assert val_loss(RowMean(), groups)["val/loss"] == pytest.approx(val_loss(RowMean(), batches)["val/loss"])


def test_load_text_refuses_bad_files(tmp_path):
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00abc")
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(DataError, match="UTF-8"):
        load_text(DataSource(kind="text", path=tmp_path / "bin"))
    with pytest.raises(DataError, match="empty"):
        load_text(DataSource(kind="text", path=tmp_path / "empty"))
    with pytest.raises(DataError, match="images"):
        load_text(DataSource(kind="images", path=tmp_path / "empty"))
    with pytest.raises(DataError, match="unknown builtin"):
        load_text(DataSource(kind="text", builtin="digits"))


def test_pydoc_builtin_is_large_english_and_deterministic(monkeypatch):
    text = load_text(DataSource(kind="text", builtin="pydoc"))
    assert len(text.encode()) >= 300_000
    assert text.count(" the ") > 1000
    # what a library patches in this process (torch.package: inspect.getfile; others: sys.excepthook) is not read
    monkeypatch.setattr(sys, "excepthook", lambda *exc: None)
    monkeypatch.setattr(inspect, "getfile", lambda obj: "")
    pydoc_text.cache_clear()
    assert pydoc_text() == text


def test_text_data_batches_and_position_restore():
    ids = list(range(50)) * 20
    ds = TextData(ids, block_size=8, batch_size=4, seed=0)
    x, y = ds.get_batch()
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])
    state = ds.state_dict()
    a = ds.get_batch()
    ds.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(a, ds.get_batch()))
    assert [torch.equal(u[0], v[0]) for u, v in zip(ds.val_batches(2), ds.val_batches(2))] == [True, True]


def test_text_data_too_short_is_a_clear_error():
    with pytest.raises(DataError, match="too short for block_size=64"):
        TextData(list(range(300)), block_size=64, batch_size=4, seed=0)


def test_char_tokenizer_start_is_newline():
    tok = CharTokenizer.train("ab\nc")
    assert tok.decode(tok.start_ids()) == "\n"
