"""A small prompt encoder: hashed character n-grams -> a distribution over the dataset's classes.

It is trained as a classifier on templated captions of the class names ("7", "seven", "digit 7",
"the number seven", ...) plus an extra "none of them" class trained on captions of random words, so that
unseen phrasings ("a handwritten seven") land on the right class and gibberish is recognised as such.
Its softmax over the real classes is the condition the DCGAN generator draws from -- the article's
text-to-image idea at CPU scale.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

TEMPLATES = [
    "{}", "a {}", "an {}", "the {}", "{} please", "digit {}", "the digit {}", "number {}", "the number {}",
    "a drawing of a {}", "a picture of a {}", "an image of a {}", "a photo of a {}", "draw a {}",
    "a handwritten {}", "handwritten {}", "a written {}", "a small {}", "a sketch of the {}", "show me a {}",
    "a {} drawn by hand", "a nice {}", "an example of {}", "one {}", "{} image", "{} picture",
]


@dataclass
class TextEncoderConfig:
    n_classes: int = 10  # real classes; the encoder has one more output for "none of them"
    n_buckets: int = 4096  # hashed n-gram vocabulary
    n_embd: int = 64
    max_n: int = 4  # character n-grams of length 1..max_n, within word boundaries


def ngram_ids(text: str, n_buckets: int, max_n: int = 4) -> list[int]:
    """Stable hash ids of the words and character n-grams (with < > boundary marks) of a prompt."""
    ids = []
    for word in re.findall(r"[a-z0-9]+", text.lower()):  # punctuation is ignored
        marked = f"<{word}>"
        ids.append(zlib.crc32(b"w:" + word.encode()) % n_buckets)
        for n in range(1, max_n + 1):
            for i in range(len(marked) - n + 1):
                ids.append(zlib.crc32(marked[i:i + n].encode()) % n_buckets)
    return ids or [0]


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.bag = nn.EmbeddingBag(cfg.n_buckets, cfg.n_embd, mode="mean")
        self.head = nn.Sequential(nn.Linear(cfg.n_embd, cfg.n_embd), nn.ReLU(),
                                  nn.Linear(cfg.n_embd, cfg.n_classes + 1))

    def _batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [ngram_ids(t, self.cfg.n_buckets, self.cfg.max_n) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        device = self.bag.weight.device
        return torch.tensor([j for i in ids for j in i], device=device), offsets.to(device)

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> logits (B, n_classes + 1); the last column is "none of the classes"."""
        return self.head(self.bag(*self._batch(texts)))

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (condition (B, n_classes) summing to 1, confidence (B,) of the best real class)."""
        probs = F.softmax(self(texts), dim=-1)
        real = probs[:, :-1]
        return real / real.sum(dim=1, keepdim=True).clamp_min(1e-8), real.max(dim=1).values


def captions(names: list[list[str]], rng: random.Random, n: int) -> tuple[list[str], list[int]]:
    """n templated captions with their class ids; names[c] lists the names of class c.

    Ids equal to len(names) are the "none" class: captions around random letter strings.
    """
    texts, labels = [], []
    for _ in range(n):
        c = rng.randrange(len(names) + 1)
        word = _random_word(rng) if c == len(names) else rng.choice(names[c])
        words = rng.choice(TEMPLATES).format(word).split()
        for _ in range(rng.choice([0, 0, 1, 2, 3])):  # filler words: a class name must win over noise
            words.insert(rng.randint(0, len(words)), _random_word(rng))
        texts.append(" ".join(words))
        labels.append(c)
    return texts, labels


def _random_word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))


def train_text_encoder(names: list[list[str]], steps: int = 400, seed: int = 0, batch_size: int = 128,
                       stop=None) -> TextEncoder:
    """Fit a TextEncoder on templated captions of `names` (class id -> list of names)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = TextEncoder(TextEncoderConfig(n_classes=len(names)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        if stop is not None and stop():
            break
        texts, labels = captions(names, rng, batch_size)
        loss = F.cross_entropy(model(texts), torch.tensor(labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()
