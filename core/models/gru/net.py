"""The article's recurrent language model in PyTorch: Embedding -> GRU -> Linear head.

Fixed from the article's Keras code: the vocabulary size comes from the tokenizer (not a constant 10000),
training uses (x, y) blocks shifted by one token, each block starts from a zero hidden state (no
`stateful=True` leaking state across unrelated batches), and generation samples with a temperature while
carrying the hidden state instead of re-reading the whole text each step with argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GRUConfig:
    vocab_size: int
    n_embd: int  # the article's embedding_dim
    hidden_size: int  # the article's rnn_units
    n_layer: int
    dropout: float = 0.0  # between GRU layers and before the head


class GRULM(nn.Module):
    context_window = None  # a GRU reads any length; sample.generate never crops its input

    def __init__(self, config: GRUConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.gru = nn.GRU(config.n_embd, config.hidden_size, num_layers=config.n_layer, batch_first=True,
                          dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        for name, p in self.gru.named_parameters():  # Keras' defaults: glorot input, orthogonal recurrent
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(p)
            elif name.startswith("weight_hh"):
                for gate in p.chunk(3, dim=0):
                    nn.init.orthogonal_(gate)
            else:
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, h: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, vocab), and the mean cross-entropy when targets (B, T) are given."""
        logits, _ = self._run(idx, h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def _run(self, idx: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        out, h = self.gru(self.embed(idx), h)  # out (B, T, hidden), h (n_layer, B, hidden)
        return self.head(self.drop(out)), h

    @torch.no_grad()
    def step(self, idx: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed new tokens idx (B, T) carrying the hidden state; return next-token logits (B, vocab) and h."""
        logits, h = self._run(idx, h)
        return logits[:, -1, :], h

    # -- continuous batching (genq.core.batch): a slot per row holds its hidden state ------------------------
    def new_slots(self, slots: int, device: str | torch.device, dtype: torch.dtype, positions: int) -> SlotState:
        """An empty state of `slots` rows for decode_slots (positions play no part)."""
        return SlotState(torch.zeros(self.config.n_layer, slots, self.config.hidden_size, device=device,
                                     dtype=dtype))

    def slot_bytes(self, dtype_bytes: int = 4) -> int:
        """Memory one slot takes: its hidden state and one decoding row's activations (a bound)."""
        c = self.config
        return dtype_bytes * (c.n_layer * c.hidden_size * 8 + c.n_embd + 4 * c.vocab_size)

    @torch.no_grad()
    def prefill_slots(self, state: SlotState, slots: list[int], prompts: list[list[int]]) -> torch.Tensor:
        """Read prompts into `slots` (one at a time: a padded batch would run the padding into h); return the
        logits (n, vocab) of the token after each."""
        out = []
        for slot, prompt in zip(slots, prompts, strict=True):
            logits, h = self.step(torch.tensor([prompt], device=state.h.device), None)
            state.h[:, slot] = h[:, 0].to(state.h.dtype)
            out.append(logits)
        return torch.cat(out)

    @torch.no_grad()
    def decode_slots(self, state: SlotState, tokens: torch.Tensor, pos: torch.Tensor, width: int) -> torch.Tensor:
        """One token per slot: tokens (S,) -> next-token logits (S, vocab); positions play no part."""
        logits, state.h = self.step(tokens[:, None], state.h)
        return logits


class SlotState:
    """The hidden states (n_layer, slots, hidden) of the rows being decoded."""

    def __init__(self, h: torch.Tensor):
        self.h = h

    def keep(self, slots: torch.Tensor) -> None:
        """Keep only `slots` (an index tensor), renumbered from 0 in that order."""
        self.h = self.h[:, slots]
