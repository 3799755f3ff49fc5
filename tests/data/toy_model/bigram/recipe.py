"""The `bigram` recipe: what the shared skeleton leaves to a model kind."""

import torch
import torch.nn.functional as F
from torch import nn

from genq.core import checkpoint
from genq.core.api import Sample
from genq.core.data.text import CharTokenizer, TextData, load_text, tokenizer_from_state
from genq.core.recipe import Recipe


class BigramRecipe(Recipe):
    kind = "bigram"
    throughput_metric = "throughput/tokens_per_s"

    def build(self, data, resumed):
        text = load_text(data)
        self.tok = tokenizer_from_state(resumed.state["tokenizer"]) if resumed else CharTokenizer.train(text)
        self.ds = TextData(self.tok.encode(text), self.p["block_size"], self.p["batch_size"], self.p["seed"])
        self.config = {"vocab_size": self.tok.vocab_size}
        self.net = nn.Embedding(self.tok.vocab_size, self.tok.vocab_size)  # row i: logits of the next token
        self.modules = {"model": self.net}
        self.optimizers = {"optimizer": torch.optim.Adam(self.net.parameters(), lr=self.p["lr"])}

    def extra_state(self):
        return {"tokenizer": self.tok.to_state(), "data": self.ds.state_dict()}

    def load_extra_state(self, state):
        self.ds.load_state_dict(state["data"])

    def step(self, step):
        x, y = self.ds.get_batch("train")
        loss = F.cross_entropy(self.net(x).flatten(0, 1), y.flatten())
        self.optimizers["optimizer"].zero_grad()
        loss.backward()
        self.optimizers["optimizer"].step()
        return {"loss": loss.detach()}


    @classmethod
    def generate(cls, source_workdir, prompts, params, out_dir, hooks, device):
        ckpt = checkpoint.load_trained(source_workdir, cls.kind)
        tok = tokenizer_from_state(ckpt.state["tokenizer"])
        net = nn.Embedding(ckpt.config["vocab_size"], ckpt.config["vocab_size"])
        ckpt.load_into({"model": net})
        out = []
        for prompt in prompts:
            ids = tok.encode(prompt or "\n")
            for _ in range(params.get("max_new_tokens", 20)):
                ids.append(int(net(torch.tensor(ids[-1:])).argmax()))
            out.append(Sample(kind="text", prompt=prompt, text=tok.decode(ids)))
        return out
