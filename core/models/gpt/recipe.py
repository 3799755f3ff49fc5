"""The `gpt` recipe: a nanoGPT-style language model on text (char, word or bpe tokens).

nanoGPT's shakespeare_char recipe: AdamW with betas (0.9, 0.99) and weight decay on matrices, linear warmup
then cosine decay to min_lr (default lr / 10) over max_steps, gradient clipping; but by default (optimizer=muon)
Muon trains the blocks' matrices, at AdamW's update size (genq.core.optim).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from genq.core import optim
from genq.core import train as loop
from genq.core.api import DataSource
from genq.core.checkpoint import Checkpoint, CheckpointError
from genq.core.models import _text
from genq.core.models.gpt.net import GPT, GPTConfig


class GPTRecipe(_text.TextRecipe):
    kind = "gpt"
    autocast = True

    @staticmethod
    def network_config(p: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        return asdict(GPTConfig(vocab_size=vocab_size, block_size=p["block_size"], n_layer=p["n_layer"],
                                n_head=p["n_head"], n_embd=p["n_embd"], dropout=p["dropout"]))

    @staticmethod
    def network(config: dict[str, Any]) -> GPT:
        if "rope_base" not in config:  # saved before rotary positions replaced learned ones (nanoGPT's network)
            raise CheckpointError("the checkpoint holds a GPT with learned positions, a network genq no longer "
                                  "builds: train the model again")
        return GPT(GPTConfig(**config))

    def build(self, data: DataSource, resumed: Checkpoint | None) -> None:
        # A run resumes with the optimizer its checkpoint holds the state of, whatever the params ask (as it
        # keeps the checkpoint's network): one without Muon's state was trained by AdamW alone.
        asked = self.p["optimizer"] == "muon"
        self.muon = asked if resumed is None else "muon" in resumed.state
        if self.muon != asked:
            self.hooks.log(f"the checkpoint was trained by {'Muon' if self.muon else 'AdamW alone'}: it goes on so")
        super().build(data, resumed)

    def optimizer(self, net: GPT):
        p = self.p
        if self.muon:
            return optim.muon_with_adamw(net, net.h, p["lr"], p["weight_decay"], (0.9, 0.99), self.device)
        return net.optimizer(p["lr"], p["weight_decay"], (0.9, 0.99), self.device)

    def flops_per_item(self) -> float:
        return self.net.flops_per_token()

    def lr_schedule(self):
        p = self.p
        min_lr = p["min_lr"] if p["min_lr"] is not None else p["lr"] / 10
        return lambda step: loop.cosine_lr(step, p["lr"], min_lr, p["warmup_steps"], p["max_steps"])
