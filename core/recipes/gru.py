"""The `gru` recipe: the article's Embedding -> GRU -> Linear language model, bugs fixed (see nets/gru.py).

Adam as in the article (constant learning rate), with gradient clipping, which recurrent nets need.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from genq.core.api import DataSource, Hooks, Sample, TrainResult
from genq.core.nets.gru import GRULM, GRUConfig
from genq.core.recipes import _text


def _config(p: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    return asdict(GRUConfig(vocab_size=vocab_size, n_embd=p["n_embd"], hidden_size=p["hidden_size"],
                            n_layer=p["n_layer"], dropout=p["dropout"]))


MODEL = _text.TextModel(
    kind="gru",
    config=_config,
    build=lambda config: GRULM(GRUConfig(**config)),
    optimizer=lambda net, p, device: torch.optim.Adam(net.parameters(), lr=p["lr"]),
)


def train(params: dict[str, Any], data: DataSource, workdir: Path, hooks: Hooks, device: str) -> TrainResult:
    """Train the GRU language model on a text dataset, resuming from the newest checkpoint in `workdir`."""
    return _text.train(MODEL, params, data, workdir, hooks, device)


def generate(source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
             hooks: Hooks, device: str) -> list[Sample]:
    """Sample num_samples texts per prompt from the GRU trained in `source_workdir`."""
    return _text.generate(MODEL, source_workdir, prompts, params, out_dir, hooks, device)
