"""Continuous batching for the text models: rows enter a running batch as others finish.

A model takes part when it has `new_slots(n, device, dtype, positions) -> state` (positions: above any
position decoded), `prefill_slots(state, slots, prompts) -> logits (n, vocab)`, `decode_slots(state, tokens (S,),
pos (S,), width) -> logits (S, vocab)` and `slot_bytes()` (GPT: a ring of block_size keys per slot; GRU: a hidden
state per slot), and the state a `keep(slots)` that drops the others.

Each row samples with its own uniforms, drawn up front from a generator seeded by the row's seed, and every
row's computation reads only its own slot: a row's text does not depend on the batch it ran in or on the
rows beside it (up to the last bit of float sums, which can turn a draw that lands within ~1e-7 of a
boundary).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from genq.core.device import one_thread
from genq.core.sample import seeded_generator

MAX_SLOTS = 256  # beyond this a step's fixed cost no longer dominates on any device genq runs on
MEMORY_SHARE = 0.5  # of the device's free memory, what the slots may take
# On a CPU a model below this many parameters decodes on one thread: its kernels are too small to split, and
# waking the slot's other threads for each of them costs more than they save (nanoGPT's CPU-recipe gpt, 0.8M:
# one thread 5x two at batch 1 and 1.4-1.9x at batch 32; a 6-layer 384-wide one, 11M: about equal).
ONE_THREAD_BELOW = 16_000_000


@dataclass
class Request:
    """One row to generate: its prompt's token ids and its own sampling."""

    key: Any  # the caller's handle for the row, given back in Finished
    prompt: list[int]
    max_new_tokens: int
    seed: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    stop: Sequence[str] = ()  # strings that end the row (not included in its text); needs a decode


@dataclass
class Finished:
    """A finished row: its new tokens, their text (cut before a stop string) and why it ended."""

    key: Any
    tokens: list[int]
    text: str | None
    reason: str  # "length", "eos" or "stop"


@dataclass
class _Active:
    request: Request
    pos: int  # position of the next token fed (= tokens read so far)
    tokens: list[int] = field(default_factory=list)
    text: str | None = None
    reason: str = "length"


def free_memory(device: str) -> int:
    """Bytes free on `device`: the GPU's free memory, or the machine's available memory on a CPU."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def choose_slots(model: nn.Module, device: str, rows: int, cap: int | None = None, dtype_bytes: int = 4) -> int:
    """Rows decoded at once: what half the free memory holds, at most MAX_SLOTS, `cap` and `rows`."""
    fits = int(free_memory(device) * MEMORY_SHARE) // max(1, model.slot_bytes(dtype_bytes))
    return max(1, min(fits, MAX_SLOTS, cap or MAX_SLOTS, rows))


def sample_rows(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                uniforms: torch.Tensor, filtered: bool = True) -> torch.Tensor:
    """One token per row of logits (S, vocab) with per-row temperature (S, 1), top_k (S, 1; vocab: all),
    top_p (S, 1; >= 1: all) and a uniform (S,) in [0, 1) each: inverse-CDF sampling in vocabulary order.

    filtered=False says no row has a top_k or top_p: the sort that finds what they drop is skipped. A row
    without them draws the same token either way (its probabilities are not touched), so its text does not
    depend on whether a neighbour filters."""
    probs = torch.softmax(logits / temperature, dim=-1, dtype=torch.float32)  # (S, vocab)
    vocab = probs.size(-1)
    if filtered:
        ordered, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        rank = torch.arange(vocab, device=probs.device)
        cut = rank >= top_k  # past the top k
        kept = ordered.masked_fill(cut, 0.0)
        kept = kept / kept.sum(-1, keepdim=True)
        # nucleus: the most likely tokens whose total reaches top_p; the first always kept (a top_p that is 0 in
        # float32, such as 1e-300, would cut it)
        cut |= (kept.cumsum(-1) - kept >= top_p) & (rank > 0)
        probs = probs.masked_fill(cut.scatter(1, order, cut), 0.0)
    cdf = probs.cumsum(-1)
    pick = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=True)
    return pick.clamp_(max=vocab - 1)[:, 0]


# sample_rows as one TorchScript call: its ~10 small kernels dispatched without Python in between (at batch 1,
# 2,382 against 2,322 tok/s on an Intel Xeon, medians of 8 alternating runs); the same kernels, the same tokens.
_sample_rows = torch.jit.script(sample_rows)


class BatchGenerator:
    """Decodes requests `slots` at a time; `continuous` admits a row as soon as a slot frees, otherwise
    (static batches, the baseline) only once the whole batch has finished."""

    def __init__(self, model: nn.Module, slots: int, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 eos_id: int | None = None, decode: Callable[[list[int]], str] | None = None,
                 continuous: bool = True, context: int | None = None):
        self.model, self.slots, self.device, self.dtype = model, slots, device, dtype
        self.eos_id, self.decode, self.continuous = eos_id, decode, continuous
        self.context = context  # the longest prompt read (its newest tokens), None: any
        self.steps = 0  # batched decoding steps run (for tests and benchmarks)

    def run(self, requests: Sequence[Request], on_finish: Callable[[Finished], None],
            should_stop: Callable[[], bool] | None = None) -> bool:
        """Generate every request, calling on_finish(row) as each ends (any order). Returns False when
        should_stop() said so first: the rows not reported yet were dropped."""
        if not requests:
            return True
        small = sum(p.numel() for p in self.model.parameters()) < ONE_THREAD_BELOW
        with one_thread(small and str(self.device).startswith("cpu")):
            return self._run(requests, on_finish, should_stop)

    @torch.inference_mode()
    def _run(self, requests: Sequence[Request], on_finish: Callable[[Finished], None],
             should_stop: Callable[[], bool] | None) -> bool:
        if any(r.stop for r in requests) and self.decode is None:
            raise ValueError("stop strings need a decode function")
        # Continuous: the longest rows first, so the batch does not end on a few long rows decoded alone (rows'
        # texts do not depend on the order). Static batches keep the file's order: they are the baseline.
        pending = deque(sorted(requests, key=lambda r: -r.max_new_tokens) if self.continuous else requests)
        S, dev = min(self.slots, len(requests)), self.device
        longest = max(r.max_new_tokens for r in requests)
        positions = max(len(self._prompt(r)) + r.max_new_tokens for r in requests)
        state = self.model.new_slots(S, dev, self.dtype, positions)
        active: list[_Active | None] = [None] * S
        logits = torch.zeros(S, 1, device=dev)
        temperature = torch.ones(S, 1, device=dev)
        top_k = torch.zeros(S, 1, dtype=torch.long, device=dev)
        top_p = torch.ones(S, 1, device=dev)
        uniforms = torch.zeros(S, longest, device=dev)
        # per slot, on the device: the next token's position (counters[0]) and where its next uniform lies in
        # `uniforms` seen flat (counters[1]); both advance by `live` (1 while a row holds the slot) in one kernel
        counters = torch.zeros(2, S, dtype=torch.long, device=dev)
        live = torch.zeros(S, dtype=torch.long, device=dev)
        filtering = 0  # rows in the slots with a top_k or a top_p
        holding, window = 0, self._window()  # rows in the slots
        while True:
            if should_stop is not None and should_stop():
                return False
            # Rows are admitted (their prompts read) a group at a time: one prefill for several rows costs about
            # what one costs, and a slot waiting a few steps for the group costs less.
            group = min(len(pending), max(1, S // 8) if self.continuous else S)
            free = [s for s, a in enumerate(active) if a is None] if pending else []
            if pending and len(free) >= group:
                admitted = [(slot, pending.popleft()) for slot in free[:len(pending)]]
                prompts = [self._prompt(r) for _, r in admitted]
                slots = [slot for slot, _ in admitted]
                row_logits = self.model.prefill_slots(state, slots, prompts)
                if logits.size(1) != row_logits.size(1):
                    logits = torch.zeros(S, row_logits.size(1), device=dev, dtype=row_logits.dtype)
                index = torch.tensor(slots, device=dev)
                logits[index] = row_logits.to(logits.dtype)
                for (slot, request), prompt in zip(admitted, prompts, strict=True):
                    gen = seeded_generator(request.seed)
                    uniforms[slot, :request.max_new_tokens] = torch.rand(request.max_new_tokens, generator=gen)
                    active[slot] = _Active(request, pos=len(prompt))
                    filtering += _filters(request)
                rows = [r for _, r in admitted]
                temperature[index, 0] = torch.tensor([r.temperature for r in rows], device=dev)
                top_k[index, 0] = torch.tensor([r.top_k or logits.size(1) for r in rows], device=dev)
                top_p[index, 0] = torch.tensor([r.top_p if r.top_p is not None and r.top_p < 1 else 2.0
                                            for r in rows], device=dev)
                counters[0, index] = torch.tensor([len(p) for p in prompts], device=dev)
                counters[1, index] = index * longest
                live[index] = 1
                holding += len(admitted)
            if not holding:
                return True
            if self.continuous and not pending and holding <= S // 2 and S > 1:
                # the tail: decode only the rows left (a copy of their slots, once per halving)
                keep = torch.tensor([s for s, a in enumerate(active) if a is not None], device=dev)
                state.keep(keep)
                drawn = counters[1, keep] - keep * longest
                logits, temperature, top_k, top_p, uniforms, live = (
                    t[keep] for t in (logits, temperature, top_k, top_p, uniforms, live))
                active, S = [a for a in active if a is not None], holding
                counters = torch.stack((counters[0, keep], drawn + torch.arange(S, device=dev) * longest))
            tokens = _sample_rows(logits, temperature, top_k, top_p, uniforms.take(counters[1]), filtering > 0)
            for slot, token in enumerate(tokens.tolist()):  # the step's one wait for the device
                row = active[slot]
                if row is not None and self._take(row, token):
                    on_finish(Finished(row.request.key, row.tokens, row.text, row.reason))
                    active[slot] = None
                    holding -= 1
                    filtering -= _filters(row.request)
                    counters[0, slot], counters[1, slot], live[slot] = 0, slot * longest, 0
            if not holding:
                if not pending:
                    return True
                continue  # every slot freed at once: admit before decoding
            width = min(max(a.pos for a in active if a is not None) + 1, window)
            logits = self.model.decode_slots(state, tokens, counters[0], width)
            self.steps += 1
            counters += live  # the token drawn and the one fed: the next uniform, the next position
            for row in active:
                if row is not None:
                    row.pos += 1

    def _prompt(self, request: Request) -> list[int]:
        """The prompt tokens read: the newest `context` of them."""
        return request.prompt[-self.context:] if self.context else request.prompt

    def _window(self) -> int:
        return getattr(getattr(self.model, "config", None), "block_size", None) or 1 << 62

    def _take(self, row: _Active, token: int) -> bool:
        """Append a drawn token to `row`; True when the row has ended (row.reason says why)."""
        request = row.request
        if self.eos_id is not None and token == self.eos_id:
            row.reason = "eos"
            row.text = self.decode(row.tokens) if self.decode else None
            return True
        row.tokens.append(token)
        if request.stop:
            row.text = self.decode(row.tokens)
            cut = first_stop(row.text, request.stop)
            if cut >= 0:
                row.text, row.reason = row.text[:cut], "stop"
                return True
        if len(row.tokens) >= request.max_new_tokens:
            row.reason = "length"
            row.text = self.decode(row.tokens) if self.decode else None
            return True
        return False


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Where the first of `stops` to appear starts in `text`, -1 if none does."""
    return min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)


def _filters(request: Request) -> bool:
    """Whether a row's sampling may drop tokens: a top_k, or a top_p below 1."""
    return request.top_k is not None or (request.top_p is not None and request.top_p < 1)
