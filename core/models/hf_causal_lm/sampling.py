"""Sampling a Hugging Face causal LM with its own KV cache, one seeded generator per row.

`model.generate` draws every row from one random stream, so a row's text would change with its batch
neighbours; here each row draws its noise from its own torch.Generator, and the rows still share one forward
pass per token. Temperature, top-k and top-p are transformers' own logits warpers, applied to the whole batch;
the draw is the Gumbel-max trick (argmax of the filtered logits plus Gumbel noise samples the softmax), so the
only per-row work is a torch.rand call, which draws the row's uniforms for several tokens at once.

Prompt rows (generate_requests) each bring their own prompt, seed, length, sampling and stop strings: the rows that
read as many prompt tokens and sample alike share a batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from genq.core import base_models
from genq.core.batch import Finished, Request, first_stop
from genq.core.sample import seeded_generator

GEN_BATCH = 64  # rows decoded at once
NOISE_FLOATS = 1 << 18  # uniforms a row draws at once (1 MiB): tokens' worth of noise, up to NOISE_TOKENS
NOISE_TOKENS = 16


@torch.no_grad()
def sample_rows(net: nn.Module, prompt_ids: list[int], seeds: list[int], device: str, max_new_tokens: int,
                temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                eos_id: int | None = None) -> list[list[int]]:
    """The new tokens of one row per seed continuing `prompt_ids` (cut before eos_id), GEN_BATCH rows at a time."""
    out: list[list[int]] = []
    for done in range(0, len(seeds), GEN_BATCH):
        gens = [seeded_generator(s, device) for s in seeds[done:done + GEN_BATCH]]
        rows = _batch(net, [prompt_ids] * len(gens), gens, device, [max_new_tokens] * len(gens), temperature,
                      top_k, top_p, eos_id)
        out += [tokens for tokens, _ in rows or []]
    return out


@torch.no_grad()
def generate_requests(net: nn.Module, requests: Sequence[Request], device: str, on_finish: Callable[[Finished], None],
                      decode: Callable[[Request, list[int]], str], eos_id: int | None = None,
                      should_stop: Callable[[], bool] | None = None, rows_at_once: int = GEN_BATCH) -> bool:
    """Every request (genq.core.batch.Request: its prompt, max_new_tokens, seed, temperature, top-k, top-p and stop
    strings), on_finish(Finished) for each as its batch ends. The rows that read as many prompt tokens (their newest
    `context_window(net)`) and sample alike run together, rows_at_once at a time, each from its own generator: a
    row's text depends on its prompt, seed and params, not on the rows beside it. decode(request, tokens): the text
    of a row's new tokens; a stop string ends a row, cut before it. False when should_stop() (read every token)
    said so first: the rows not reported were not generated."""
    window = context_window(net)
    groups: dict[tuple, list[Request]] = {}
    for r in requests:
        top_p = r.top_p if r.top_p is not None and r.top_p < 1 else None
        groups.setdefault((min(len(r.prompt), window), r.temperature, r.top_k, top_p), []).append(r)
    for (_, temperature, top_k, top_p), group in groups.items():
        for done in range(0, len(group), rows_at_once):
            part = group[done:done + rows_at_once]
            ended = [partial(_stopped, r, decode) if r.stop else None for r in part]
            rows = _batch(net, [r.prompt for r in part], [seeded_generator(r.seed, device) for r in part], device,
                          [r.max_new_tokens for r in part], temperature, top_k, top_p, eos_id, ended, should_stop)
            if rows is None:
                return False
            for r, (tokens, reason) in zip(part, rows, strict=True):
                text = decode(r, tokens)
                if (cut := first_stop(text, r.stop)) >= 0:
                    text, reason = text[:cut], "stop"
                on_finish(Finished(r.key, tokens, text, reason))
    return True


def context_window(net: nn.Module) -> int:
    """The most tokens `net` reads at once: its config's context window (a large number when it names none)."""
    return base_models.context_window(net.config.to_dict()) or 1 << 30


def _stopped(request: Request, decode: Callable[[Request, list[int]], str], tokens: list[int]) -> bool:
    return first_stop(decode(request, tokens), request.stop) >= 0


def _batch(net, prompts, gens, device, max_new, temperature, top_k, top_p, eos_id, ended=None,
           should_stop=None) -> list[tuple[list[int], str]] | None:
    """(new tokens, why the row ended: "eos", "stop" or "length") of each row continuing its prompt (all as long
    once cut to the window), row r from generator gens[r] for at most max_new[r] tokens, cut before eos_id; a row
    with a check ended[r](tokens) ends when it says so (its tokens read every step). None when should_stop()
    said so first."""
    window = context_window(net)
    rows = len(gens)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)] + ([TopKLogitsWarper(top_k)] if top_k else [])
                                  + ([TopPLogitsWarper(top_p)] if top_p is not None and top_p < 1 else []))
    tokens = torch.tensor([p[-window:] for p in prompts], dtype=torch.long, device=device)  # (B, T)
    new = torch.empty(rows, 0, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    limits = torch.tensor(max_new, device=device)
    read = [[] for _ in range(rows)] if ended and any(ended) else None  # rows' tokens, when a row checks them
    reasons = ["length"] * rows
    cache, cached, feed = None, 0, tokens
    chunk, noise, cache_arg = 1, None, _cache_arg(net)
    for i in range(max(max_new)):
        if should_stop is not None and should_stop():
            return None
        if cached + feed.size(1) > window:
            # the window is full: start a fresh cache on the last half of it (learned positions end at the window)
            feed, cache, cached = tokens[:, -(window // 2):], None, 0
        out = net(input_ids=feed, use_cache=True, **{cache_arg: cache})
        cache, cached = _cache_of(out), cached + feed.size(1)
        logits = warpers(tokens, out.logits[:, -1, :].float())  # (B, vocab), -inf outside top-k / top-p
        if i % chunk == 0:
            # Tokens of noise a row draws per rand call: set by the vocabulary only, never by the batch, so a row's
            # stream of uniforms is the same whatever its neighbours.
            chunk = max(1, min(NOISE_TOKENS, NOISE_FLOATS // logits.size(1)))
            noise = torch.stack([torch.rand(chunk, logits.size(1), generator=g, device=device) for g in gens], 1)
        nxt = _gumbel_max(logits, noise[i % chunk])  # (B, 1)
        tokens, new, feed = torch.cat([tokens, nxt], 1), torch.cat([new, nxt], 1), nxt  # nxt: (B, 1)
        if read is not None:  # a row checks its text: every row's tokens come to the host at every step
            for r, token in enumerate(nxt[:, 0].tolist()):
                if reasons[r] != "length" or len(read[r]) >= max_new[r]:
                    continue  # ended before
                if token == eos_id:
                    reasons[r] = "eos"
                    continue
                read[r].append(token)
                if ended[r] is not None and ended[r](read[r]):
                    reasons[r] = "stop"
            if all(reason != "length" or len(row) >= m for reason, row, m in zip(reasons, read, max_new, strict=True)):
                break
            continue
        finished |= limits <= i + 1
        if eos_id is not None:
            finished |= nxt.squeeze(1) == eos_id
        if i % 8 == 7 and bool(finished.all()):  # checked now and then: each check syncs with a GPU
            break
    if read is not None:
        return list(zip(read, reasons, strict=True))
    out_rows = []
    for row, m in zip(new.tolist(), max_new, strict=True):
        row = row[:m]
        out_rows.append((row[:row.index(eos_id)], "eos") if eos_id is not None and eos_id in row else (row, "length"))
    return out_rows


def _gumbel_max(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row of logits (B, vocab) from uniforms (B, vocab): argmax(logits + Gumbel noise)."""
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))  # rand is in [0, 1): clamp keeps log finite
    return (logits + gumbel).argmax(dim=-1, keepdim=True)


def _cache_arg(net: nn.Module) -> str:
    """The forward keyword of the KV cache: `past_key_values`, renamed `cache` in recent transformers."""
    return "cache" if "cache" in inspect.signature(net.forward).parameters else "past_key_values"


def _cache_of(out) -> object:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
