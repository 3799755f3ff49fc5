"""Quality benchmark of the text models on tinyshakespeare (a script, not a test).

    .venv/bin/python bench/quality_text.py [gpt|gru ...] [--data PATH] [--device cpu|cuda] [--seed N]
                                           [--threads N] [--no-peer]

gpt: nanoGPT's CPU recipe (char tokens, 4 layers, 4 heads, 128 wide, block 64, batch 12, lr 1e-3, no dropout,
2000 steps, warmup 100, cosine to 1e-4, AdamW (0.9, 0.99), weight decay 0.1, clip 1.0); nanoGPT reports val
loss ~1.88 for it. Target: val/loss <= 1.88. The same recipe, seed and data pipeline then train a peer:
nanoGPT's own network (ClassicGPT below: learned absolute positions, LayerNorm, GELU MLP), run after ours,
not alongside, so the two wall times compare.
gru: the article's network, CPU-sized (128-d embedding, 256 GRU units, block 100, batch 32, lr 3e-3),
1000 steps. Target: val/loss <= 2.0 within 4 minutes of wall time.

Wall times are noisy on a shared machine; tok/s is the median training speed over the 10-step log
intervals, which a burst of other work moves far less. The reported val/loss is the job's final one: like
every evaluation's, nanoGPT's estimate from eval_iters (20) validation batches, the same batches every time.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genq.core import api
from genq.core import device as dev
from genq.core.models.gpt.net import GPT, GPTConfig
from genq.core.models.gpt.recipe import GPTRecipe
from genq.core.recipe import fit

RUNS = {
    "gpt": ({"tokenizer": "char", "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64,
             "batch_size": 12, "lr": 1e-3, "dropout": 0.0, "max_steps": 2000, "eval_interval": 250,
             "eval_iters": 20, "checkpoint_interval": 1000, "warmup_steps": 100, "min_lr": 1e-4,
             "weight_decay": 0.1, "grad_clip": 1.0}, 1.88, None),
    "gru": ({"tokenizer": "char", "n_embd": 128, "hidden_size": 256, "block_size": 100, "batch_size": 32,
             "lr": 3e-3, "max_steps": 1000, "eval_interval": 250, "eval_iters": 20,
             "checkpoint_interval": 1000}, 2.0, 240.0),
}


class ClassicBlock(nn.Module):
    """nanoGPT's block: LayerNorm, causal self-attention, LayerNorm, GELU MLP (no biases, no dropout)."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head = c.n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(c.n_embd, bias=False), nn.LayerNorm(c.n_embd, bias=False)
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.attn_proj = nn.Linear(c.n_embd, c.n_embd, bias=False)
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        qkv = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in qkv)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class ClassicGPT(nn.Module):
    """nanoGPT's model.py as the peer: learned absolute positions, tied embeddings, GPT-2 init."""

    context_window = None  # step() crops its own context
    optimizer = GPT.optimizer  # the same AdamW groups as ours
    num_params, flops_per_token = GPT.num_params, GPT.flops_per_token  # the recipe asks for them (MFU on a GPU)

    def __init__(self, config: dict):
        super().__init__()
        c = GPTConfig(**config)
        self.config, self.block_size = c, c.block_size
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        self.h = nn.ModuleList(ClassicBlock(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=False)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                proj = name.endswith(("attn_proj.weight", "c_proj.weight"))
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer) if proj else 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    @torch.no_grad()
    def step(self, idx: torch.Tensor, context: torch.Tensor | None):
        """No KV cache: re-read the newest block_size tokens for every new one (the final samples only)."""
        context = (idx if context is None else torch.cat([context, idx], dim=1))[:, -self.block_size:]
        return self(context)[0][:, -1, :], context


class PeerRecipe(GPTRecipe):
    """Our gpt recipe (data, schedule, optimizer, evaluation) around nanoGPT's network, in nanoGPT's precision."""

    network = staticmethod(ClassicGPT)

    @classmethod
    def amp(cls, device: str, width: int = 0):
        """bf16 autocast on a GPU only: nanoGPT's train.py computes in float32 on any CPU, with bf16 units or not."""
        return dev.autocast(device) if dev.is_cuda(device) else nullcontext()


class PrintHooks(api.Hooks):
    def __init__(self, target: float):
        self.t0 = time.perf_counter()
        self.last: dict[str, float] = {}
        self.target, self.reached_s = target, None  # wall time of the first evaluation at or under target
        self.speeds: list[float] = []  # tokens/s of every 10-step log interval

    def metrics(self, step, values):
        self.last.update(values)
        if "throughput/tokens_per_s" in values:
            self.speeds.append(values["throughput/tokens_per_s"])
        if "val/loss" in values:
            if self.reached_s is None and values["val/loss"] <= self.target:
                self.reached_s = time.perf_counter() - self.t0
            print(f"  step {step:5d}  val/loss {values['val/loss']:.4f}  "
                  f"train/loss {self.last.get('train/loss', float('nan')):.4f}  "
                  f"{self.last.get('throughput/tokens_per_s', 0):8.0f} tok/s  "
                  f"{time.perf_counter() - self.t0:6.1f}s", flush=True)


def run(name: str, train, params: dict, target: float, data: api.DataSource, device: str) -> dict:
    """Train once in a fresh folder; the final val/loss, wall time and time to target."""
    print(f"{name}: {params}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        hooks = PrintHooks(target)
        t0 = time.perf_counter()
        result = train(params, data, Path(tmp), hooks, device)
        wall = time.perf_counter() - t0
    print(f"  sample: {result.samples[0].text[:160]!r}")
    return {"name": name, "steps": result.step, "loss": result.metrics["val/loss"], "wall": wall,
            "reached": hooks.reached_s, "tok_s": statistics.median(hooks.speeds)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["gpt", "gru"])
    ap.add_argument("--data", default=os.environ.get("GENQ_BENCH_CORPUS"),
                    help="the whole tinyshakespeare.txt (default: $GENQ_BENCH_CORPUS)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-peer", action="store_true", help="skip nanoGPT's network after ours")
    args = ap.parse_args()
    # tests/data holds only a 20k-character excerpt: too small for the targets to mean anything
    if not args.data:
        ap.error("the benchmark needs the whole tinyshakespeare.txt: pass --data PATH or set GENQ_BENCH_CORPUS")
    if not Path(args.data).is_file():
        ap.error(f"the corpus {args.data} does not exist")
    torch.set_num_threads(args.threads)
    data = api.DataSource(kind="text", path=Path(args.data))
    rows = []
    for model in args.models:
        params, target, budget = RUNS[model]
        params = {**params, "seed": args.seed}
        ours = run(model, lambda *a, m=model: api.train(m, *a), params, target, data, args.device)
        rows.append((ours, target, budget))
        if model == "gpt" and not args.no_peer:
            peer = run("peer", lambda *a: fit(PeerRecipe, *a), params, target, data, args.device)
            rows.append((peer, target, budget))
    print(f"\nseed {args.seed}, {args.threads} threads, device {args.device}")
    print("model  steps  val/loss  target  wall_s  reached_s  budget_s  tok/s  ok")
    by_name = {r["name"]: r for r, _, _ in rows}
    for r, target, budget in rows:
        reached = r["reached"]
        # ok: the target met within the budget (gru) or, for ours, within the peer's whole wall time
        limit = by_name["peer"]["wall"] if r["name"] == "gpt" and "peer" in by_name else budget
        ok = r["loss"] <= target and (limit is None or (reached is not None and reached <= limit))
        reached_txt = f"{reached:9.1f}" if reached is not None else "        -"
        print(f"{r['name']:5s}  {r['steps']:5d}  {r['loss']:8.4f}  {target:6.2f}  {r['wall']:6.1f}  "
              f"{reached_txt}  {budget or '-':>8}  {r['tok_s']:5.0f}  {ok}")
    if "gpt" in by_name and "peer" in by_name:
        ours, peer = by_name["gpt"], by_name["peer"]
        print(f"gpt / peer (nanoGPT's network, same recipe and seed): val/loss {ours['loss']:.4f} / "
              f"{peer['loss']:.4f} = {ours['loss'] / peer['loss']:.3f}, wall {ours['wall']:.1f}s / "
              f"{peer['wall']:.1f}s = {ours['wall'] / peer['wall']:.2f}, "
              f"median tokens/s {ours['tok_s']:.0f} / {peer['tok_s']:.0f} = "
              f"{ours['tok_s'] / peer['tok_s']:.2f}")


if __name__ == "__main__":
    main()
