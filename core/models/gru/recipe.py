"""The `gru` recipe: the article's Embedding -> GRU -> Linear language model, bugs fixed (see net.py).

Adam as in the article (constant learning rate), with gradient clipping, which recurrent nets need.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from genq.core.models import _text
from genq.core.models.gru.net import GRULM, GRUConfig


class GRURecipe(_text.TextRecipe):
    kind = "gru"

    @staticmethod
    def network_config(p: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        return asdict(GRUConfig(vocab_size=vocab_size, n_embd=p["n_embd"], hidden_size=p["hidden_size"],
                                n_layer=p["n_layer"], dropout=p["dropout"]))

    @staticmethod
    def network(config: dict[str, Any]) -> GRULM:
        return GRULM(GRUConfig(**config))

    def optimizer(self, net: GRULM):
        return torch.optim.Adam(net.parameters(), lr=self.p["lr"])
