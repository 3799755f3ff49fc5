"""What the text recipes (gpt, gru) share: data and tokenizer, resume, the loop, final samples, generation.

A recipe describes its network with a `TextModel`; `train` and `generate` below do the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genq.core import checkpoint, nets
from genq.core import sample as sampling
from genq.core import train as loop
from genq.core.api import DataError, DataSource, Hooks, Sample, TrainResult, each_prompt
from genq.core.data.text import TextData, build_tokenizer, load_text, tokenizer_from_state
from genq.core.eval.text import sample_metrics, val_loss
from genq.jobs.params import validate_generate_params, validate_train_params

FINAL_SAMPLES = 3
GEN_BATCH = 64  # rows decoded at once when a prompt asks for many samples
FINAL_EVAL_BLOCKS = 4096  # the final val/loss reads up to this many blocks: all of tinyshakespeare's 1742


@dataclass
class TextModel:
    kind: str  # the model name, stored in checkpoints
    config: Callable[[dict[str, Any], int], dict[str, Any]]  # (params, vocab_size) -> network config dict
    build: Callable[[dict[str, Any]], nn.Module]  # config dict -> network
    optimizer: Callable[[nn.Module, dict[str, Any], str], torch.optim.Optimizer]  # (net, params, device)
    lr_schedule: Callable[[dict[str, Any]], Callable[[int], float] | None] = lambda p: None
    autocast: bool = False  # bf16 autocast on CUDA


def train(spec: TextModel, params: dict[str, Any], data: DataSource, workdir: Path, hooks: Hooks,
          device: str) -> TrainResult:
    """Train (or resume) a text model of `spec` and finish with a few samples and eval metrics."""
    p = validate_train_params(spec.kind, params)
    ckpt = checkpoint.load_latest(workdir, spec.kind)
    text = load_text(data)
    if ckpt is not None:
        tok = tokenizer_from_state(ckpt.state["tokenizer"])
    else:
        tok = build_tokenizer(p["tokenizer"], text, p["vocab_size"])
        hooks.log(f"{p['tokenizer']} tokenizer: {tok.vocab_size} tokens")
    ds = TextData(tok.encode(text), p["block_size"], p["batch_size"], p["seed"], device)

    torch.manual_seed(p["seed"])
    config = ckpt.config if ckpt is not None else spec.config(p, tok.vocab_size)
    net = spec.build(config).to(device)
    opt = spec.optimizer(net, p, device)
    start = 0
    if ckpt is not None:
        start = ckpt.restore({"model": net}, {"optimizer": opt})
        ds.load_state_dict(ckpt.state["data"])
        hooks.log(f"resumed from the checkpoint at step {start}")
    else:
        hooks.log(f"{spec.kind}: {nets.size(net)}")
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if spec.autocast and device.startswith("cuda")
           else nullcontext())
    clip = p.get("grad_clip", 0.0)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        x, y = ds.get_batch("train")
        with amp:
            _, loss = net(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        return {"loss": loss.detach()}

    def eval_fn(step: int) -> dict[str, float]:
        if step >= p["max_steps"]:  # the job's reported number: the whole validation split, no sampling noise
            return _full_val_loss(net, ds, amp)
        with amp:
            return val_loss(net, ds.val_batches(p["eval_iters"]))

    def save_fn(step: int) -> Path:
        return checkpoint.save(workdir, step, {"model": net}, {
            "kind": spec.kind, "config": config, "params": p, "tokenizer": tok.to_state(),
            "optimizer": opt.state_dict(), "rng": checkpoint.rng_state(), "data": ds.state_dict()})

    result = loop.run(step_fn, hooks, max_steps=p["max_steps"], start_step=start, save_fn=save_fn,
                      checkpoint_interval=p["checkpoint_interval"], eval_fn=eval_fn,
                      eval_interval=p["eval_interval"], optimizers=[opt], lr_schedule=spec.lr_schedule(p),
                      items_per_step=p["batch_size"] * p["block_size"])
    if result.stopped:
        return result

    gen = torch.Generator(device=device).manual_seed(p["seed"])
    max_new = 200 if p["tokenizer"] == "char" else 60
    texts = _sample(net, tok, None, FINAL_SAMPLES, gen, device, max_new_tokens=max_new, temperature=0.8,
                    top_k=None, top_p=None)
    extra = sample_metrics(texts)
    hooks.metrics(result.step, extra)
    result.metrics = {**result.metrics, **extra}  # the loop's final evaluation, redone when a finished job resumes
    result.samples = [Sample(kind="text", prompt=None, text=t) for t in texts]
    return result


def generate(spec: TextModel, source_workdir: Path, prompts: list[str | None], params: dict[str, Any],
             out_dir: Path, hooks: Hooks, device: str) -> list[Sample]:
    """num_samples texts per prompt (None: unconditional); stops between prompts when asked to."""
    g = validate_generate_params(params)
    ckpt = checkpoint.load_trained(source_workdir, spec.kind)
    tok = tokenizer_from_state(ckpt.state["tokenizer"])
    net = spec.build(ckpt.config).to(device)
    ckpt.load_into({"model": net})
    net.eval()
    gen = sampling.seeded_generator(g["seed"], device)


    def make(i: int, prompt: str | None) -> list[Sample]:
        texts = _sample(net, tok, prompt, g["num_samples"], gen, device, max_new_tokens=g["max_new_tokens"],
                        temperature=g["temperature"], top_k=g["top_k"], top_p=g["top_p"])
        return [Sample(kind="text", prompt=prompt, text=t) for t in texts]

    return each_prompt(prompts, hooks, make)


@torch.no_grad()
def _full_val_loss(net: nn.Module, ds: TextData, amp, rows: int = 64) -> dict[str, float]:
    """val/loss over the non-overlapping blocks of the validation split (evenly spaced, FINAL_EVAL_BLOCKS at
    most): the estimate from eval_iters random batches (nanoGPT's) is off by 0.01-0.02 either way."""
    t = ds.block_size
    n = (len(ds.val) - 1) // t  # block i reads val[i*t : i*t + t + 1]
    starts = torch.arange(n) * t
    if n > FINAL_EVAL_BLOCKS:
        starts = starts[torch.linspace(0, n - 1, FINAL_EVAL_BLOCKS).long()]
    offsets = torch.arange(t + 1)
    was_training = net.training
    net.eval()
    total = torch.zeros((), device=ds.device)
    for chunk in starts.split(rows):
        blocks = ds.val[chunk[:, None] + offsets].to(ds.device)  # (rows, t + 1)
        with amp:
            _, loss = net(blocks[:, :-1], blocks[:, 1:])
        total += loss.float() * len(chunk)  # weighted by rows: the last batch may be short
    net.train(was_training)
    loss = (total / len(starts)).item()
    return {"val/loss": loss, "val/perplexity": math.exp(min(loss, 700.0))}


def _sample(net: nn.Module, tok, prompt: str | None, n: int, gen: torch.Generator, device: str,
            **sampling_args) -> list[str]:
    """n texts continuing `prompt` (the prompt included), or from the tokenizer's start token."""
    ids = tok.encode(prompt) if prompt else []
    if prompt and not ids:
        raise DataError(f"the prompt {prompt!r} has no tokens the model knows")
    start = ids or tok.start_ids()
    texts = []
    for done in range(0, n, GEN_BATCH):
        rows = min(GEN_BATCH, n - done)
        x = torch.tensor([start] * rows, dtype=torch.long, device=device)
        y = sampling.generate(net, x, generator=gen, eos_id=tok.eos_id, **sampling_args).tolist()
        for row in y:
            new = row[len(start):]
            if tok.eos_id is not None and tok.eos_id in new:
                new = new[:new.index(tok.eos_id)]
            texts.append(tok.decode(ids + new))
    return texts
