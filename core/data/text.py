"""Text data: the char, word and bpe tokenizers, and a dataset of random (x, y) blocks with a 90/10 split.

A tokenizer has `name`, `vocab_size`, `encode(text) -> list[int]` (a prompt), `encode_corpus(text) -> ndarray`
(a whole training text, integers), `decode(ids) -> str`, `start_ids()` (what an unconditional sample starts from),
`eos_id` (None when it has none) and `to_state()`, a JSON-able dict that `tokenizer_from_state` turns back into
the same tokenizer (for checkpoints).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import numpy as np
import torch

from genq.core.api import DataError, DataSource
from genq.core.data.formats import decode_text
from genq.core.device import to_device

# ---------------------------------------------------------------------------------------------- tokenizers


class CharTokenizer:
    """One token per character of the training text (nanoGPT's shakespeare_char)."""

    name, eos_id = "char", None

    def __init__(self, chars: list[str]):
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """The characters of `text` in code point order (sorted(set(text)), counted in numpy)."""
        counts = sum(np.bincount(points, minlength=0x110000) for points in _code_points(text))
        return cls([chr(c) for c in np.flatnonzero(counts)])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            raise _unknown_chars({c for c in text if c not in self.stoi}) from None

    def encode_corpus(self, text: str) -> np.ndarray:
        """encode(text) as an array, looked up in numpy a slice at a time: a 110 MB text in ~2 s and ~0.5 GB,
        where the list took ~20 s and 2 GB."""
        known = np.fromiter(map(ord, self.chars), dtype=np.int64, count=len(self.chars))
        table = np.full(int(known.max(initial=0)) + 2, -1, dtype=_id_dtype(len(known)))  # the last: unknown
        table[known] = np.arange(len(known))
        out = np.empty(len(text), dtype=table.dtype)
        start = 0
        for points in _code_points(text):
            ids = table[np.minimum(points, len(table) - 1)]
            if (ids < 0).any():
                raise _unknown_chars(map(chr, np.unique(points[ids < 0])))
            out[start:start + len(ids)] = ids
            start += len(ids)
        return out

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def start_ids(self) -> list[int]:
        return [self.stoi["\n"]] if "\n" in self.stoi else [0]

    def to_state(self) -> dict:
        return {"name": self.name, "chars": "".join(self.chars)}


class WordTokenizer:
    """The article's word vocabulary, fixed: <PAD>=0, <EOS>=1, <UNK>=2, then words by falling count.

    Text is lower-cased and split into words, punctuation marks and newlines; unknown words map to <UNK>.
    """

    name = "word"
    SPECIALS = ("<PAD>", "<EOS>", "<UNK>")
    pad_id, eos_id, unk_id = 0, 1, 2
    _TOKEN = re.compile(r"<pad>|<eos>|<unk>|\n|\w+(?:'\w+)*|[^\w\s]")
    _NO_SPACE_BEFORE = set(".,;:!?)]}'\n")

    def __init__(self, words: list[str]):
        self.itos = list(self.SPECIALS) + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def split(cls, text: str) -> list[str]:
        """Lower-cased words, punctuation and newlines; special tokens written in the text stay whole."""
        specials = ("<pad>", "<eos>", "<unk>")
        return [t.upper() if t in specials else t for t in cls._TOKEN.findall(text.lower())]

    @classmethod
    def train(cls, text: str, vocab_size: int) -> WordTokenizer:
        """The `vocab_size` - 3 most frequent words of `text` (the rest read as <UNK>): a corpus' own
        vocabulary is unbounded, and the network's embedding and head grow with it."""
        counts: Counter[str] = Counter()
        for piece in text_pieces(text):
            counts.update(w for w in cls.split(piece) if w not in cls.SPECIALS)
        # most frequent first; ties alphabetical so the vocabulary does not depend on dict order
        words = [w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))]
        return cls(words[:max(0, vocab_size - len(cls.SPECIALS))])

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in self.split(text)]

    def encode_corpus(self, text: str) -> np.ndarray:
        """encode(text) as an array, a piece of the text at a time (the list of all its words took 2 GB for 110 MB)."""
        get, unk = self.stoi.get, self.unk_id
        return joined(np.array([get(w, unk) for w in self.split(piece)], dtype=np.int64) for piece in text_pieces(text))

    @classmethod
    def spaced(cls, before: str, after: str) -> bool:
        """Whether written text puts a space between `before` and `after` (words, marks, newlines)."""
        return before[-1] not in "\n([{" and after[0] not in cls._NO_SPACE_BEFORE

    def decode(self, ids: list[int]) -> str:
        out: list[str] = []
        for i in ids:
            if i == self.pad_id:
                continue
            w = self.itos[i]
            if out and self.spaced(out[-1], w):
                out.append(" ")
            out.append(w)
        return "".join(out)

    def start_ids(self) -> list[int]:
        return [self.eos_id]

    def to_state(self) -> dict:
        return {"name": self.name, "words": self.itos[len(self.SPECIALS):]}


class BPETokenizer:
    """Byte-level BPE trained on the dataset with Hugging Face `tokenizers`: any text encodes."""

    name, eos_id = "bpe", None

    def __init__(self, tok):
        self.tok = tok

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def encode_corpus(self, text: str) -> np.ndarray:
        """The text line by line, as the tokenizer was trained (pieces never span two lines), the lines of ~1M
        characters in one batch on all cores: one encode() of an 11 MB text took 16 s and 2 GB, its Encoding
        keeping every offset."""
        return joined(np.fromiter(chain.from_iterable(e.ids for e in self.tok.encode_batch(piece.splitlines(True))),
                                  dtype=np.int64) for piece in text_pieces(text, 1 << 20))

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids))

    def start_ids(self) -> list[int]:
        return self.encode("\n")

    def to_state(self) -> dict:
        return {"name": self.name, "json": self.tok.to_str()}


Tokenizer = CharTokenizer | WordTokenizer | BPETokenizer


def continued(tok: Tokenizer, prompt: str, text: str) -> str:
    """`prompt` followed by `text`, the tokens generated after it, as `tok` writes a sequence: the word tokenizer
    puts a space between words (its decode of the new tokens alone starts without one)."""
    if isinstance(tok, WordTokenizer) and prompt and text and tok.spaced(prompt, text):
        return f"{prompt} {text}"
    return prompt + text


def _unknown_chars(chars) -> DataError:
    return DataError("text contains characters the model was not trained on: "
                     + ", ".join(repr(c) for c in sorted(chars)[:20]))


def text_pieces(text: str, chars: int = 1 << 22):
    """`text` in pieces of about `chars` characters, each ending after a newline (which no word token spans), so
    that a corpus is tokenized a piece at a time."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + chars) + 1 or len(text)
        yield text[start:end]
        start = end


def joined(parts: Iterable[np.ndarray]) -> np.ndarray:
    """The ids of a corpus' pieces in one int64 array (empty for no piece)."""
    return np.concatenate([*parts] or [np.zeros(0, dtype=np.int64)])


def _code_points(text: str, chars: int = 1 << 24):
    """The code points (uint32) of `text`, `chars` at a time."""
    for i in range(0, len(text), chars):
        yield np.frombuffer(text[i:i + chars].encode("utf-32-le"), dtype=np.uint32)


def _id_dtype(vocab_size: int) -> type[np.integer]:
    """The narrowest signed integer type for ids below vocab_size."""
    return np.int16 if vocab_size <= 2**15 else np.int32


def build_tokenizer(name: str, text: str, vocab_size: int = 2000) -> Tokenizer:
    """Train tokenizer `name` ('char', 'word', 'bpe') on `text`."""
    if name == "char":
        return CharTokenizer.train(text)
    if name == "word":
        return WordTokenizer.train(text, vocab_size)
    if name == "bpe":
        return BPETokenizer.train(text, vocab_size)
    raise DataError(f"unknown tokenizer '{name}' (known: char, word, bpe)")


def tokenizer_from_state(state: dict) -> Tokenizer:
    """Rebuild a tokenizer from its to_state() dict."""
    name = state.get("name")
    if name == "char":
        return CharTokenizer(list(state["chars"]))
    if name == "word":
        return WordTokenizer(list(state["words"]))
    if name == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_str(state["json"]))
    raise DataError(f"unknown tokenizer state '{name}'")


# ------------------------------------------------------------------------------------------------- data


def _narrow(ids: list[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Token ids as a 1-D tensor of the narrowest integer type that holds them: int16 below 32,768 tokens (a
    110M-token corpus in 220 MB, not 880); get_batch widens the rows it cuts."""
    ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    return torch.from_numpy(ids.astype(_id_dtype(int(ids.max(initial=0)) + 1), copy=False))


def load_text(data: DataSource) -> str:
    """The training text of a text DataSource (an uploaded UTF-8 file or the builtin 'pydoc')."""
    if data.kind != "text":
        raise DataError(f"this model trains on text, but the dataset is {data.kind}")
    if data.builtin is not None:
        if data.builtin != "pydoc":
            raise DataError(f"unknown builtin text dataset '{data.builtin}' (known: pydoc)")
        from genq.core.data.builtin_text import pydoc_text

        return pydoc_text()
    if data.path is None:
        raise DataError("the dataset has neither a file nor a builtin name")
    path = Path(data.path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if len(files) != 1:
            raise DataError(f"a text dataset is one UTF-8 text file; the folder holds {len(files)} files")
        path = files[0]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the dataset: {exc.strerror}") from None
    return decode_text(raw)  # the upload check's rules: UTF-8, no NUL bytes, more than whitespace


class TextData:
    """Token ids split 90/10 into train/val; random (x, y) blocks from a seeded generator."""

    def __init__(self, ids: list[int] | np.ndarray | torch.Tensor, block_size: int, batch_size: int, seed: int,
                 device: str = "cpu"):
        data = _narrow(ids)
        n = int(0.9 * len(data))
        self.train, self.val = data[:n], data[n:]
        self.block_size, self.batch_size, self.device, self.seed = block_size, batch_size, device, seed
        if len(self.val) <= block_size:
            need = (block_size + 1) * 10
            raise DataError(f"the dataset is too short for block_size={block_size}: {len(data)} tokens, "
                            f"needs at least {need} (10% of it is held out for validation)")
        self.gen = torch.Generator().manual_seed(seed)

    def get_batch(self, split: str = "train", gen: torch.Generator | None = None,
                  batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y of shape (B, block_size); y is x shifted by one token."""
        data = self.train if split == "train" else self.val
        b, t = batch_size or self.batch_size, self.block_size
        ix = torch.randint(len(data) - t, (b,), generator=gen or self.gen)
        offsets = torch.arange(t + 1)
        blocks = to_device(data[ix[:, None] + offsets], self.device).long()  # (B, T+1): one copy for x and y
        return blocks[:, :-1], blocks[:, 1:]

    def val_batches(self, n: int, rows: int | None = None):
        """The same `n` validation batches every time (a fixed generator), so evaluations compare; with `rows`,
        their rows regrouped `rows` at a time (the last group may be shorter)."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        batches = [self.get_batch("val", gen) for _ in range(n)]
        if rows is None:
            return batches
        x, y = (torch.cat(parts) for parts in zip(*batches, strict=True))
        return list(zip(x.split(rows), y.split(rows), strict=True))

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
