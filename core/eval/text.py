"""Quality metrics for language models: validation loss and perplexity, and the diversity of samples.

distinct-n (Li et al., 2016): unique word n-grams / all word n-grams over the samples; higher is more varied.
repetition rate (rep-4 of Welleck et al., 2019): per sample, the share of word 4-grams that repeat an
earlier one in the same sample, averaged over samples; a model stuck in a loop scores near 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

# Evaluation reads ~EVAL_TOKENS tokens a forward pass: on a CPU the CPU recipe's 20 batches of 12 x 64 took 1.4x
# as long as the same rows 48 to 80 at a time (fewer, larger products). Never fewer rows than a training batch,
# nor logits over LOGITS_BYTES (a 50,000-token vocabulary keeps the training batch).
EVAL_TOKENS, LOGITS_BYTES = 4096, 64 << 20


def eval_rows(batch_size: int, block_size: int, vocab_size: int) -> int:
    """Rows of block_size tokens per forward pass when evaluating."""
    return max(batch_size, min(EVAL_TOKENS // block_size, LOGITS_BYTES // (4 * block_size * vocab_size)))


@torch.inference_mode()  # not just no_grad: no version counters or views to track (the CPU recipe's 4-12% faster)
def val_loss(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Mean cross-entropy per row over the batches (model(x, y) -> (logits, loss)), and its perplexity."""
    was_training = model.training
    model.eval()
    losses, rows = zip(*((model(x, y)[1].float() * len(x), len(x)) for x, y in batches), strict=True)
    model.train(was_training)
    loss = torch.stack(losses).sum().item() / sum(rows)
    return {"val/loss": loss, "val/perplexity": math.exp(min(loss, 700.0))}


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams over all word n-grams in `texts` (0 when there are none)."""
    grams = [g for t in texts for g in _ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: list[str], n: int = 4) -> float:
    """Mean over samples of the share of word n-grams that already occurred earlier in the same sample."""
    rates = []
    for t in texts:
        grams = _ngrams(t.split(), n)
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def sample_metrics(texts: list[str]) -> dict[str, float]:
    """eval/distinct_1, eval/distinct_2 and eval/repetition_rate of generated texts."""
    return {"eval/distinct_1": distinct_n(texts, 1), "eval/distinct_2": distinct_n(texts, 2),
            "eval/repetition_rate": repetition_rate(texts)}
