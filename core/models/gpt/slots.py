"""Continuous batching's side of the GPT (genq.core.batch): the slots' KV cache and the decoding step.

A step runs one token per slot through the network with torch's functions on weights prepared once, a few
kernels a layer and no module calls (at this model's sizes a step costs its kernel calls and the bytes it reads,
not its arithmetic), traced with torch.jit.trace on a CPU and replayed from CUDA graphs on a GPU.
"""

from __future__ import annotations

import math
import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from genq.core.models.gpt import kernels

if TYPE_CHECKING:
    from genq.core.models.gpt.net import GPT, Block


class SlotCache:
    """Keys and values for continuous batching, kv (n_layer, 2, slots, nh, block_size, hs): each slot a ring.

    Also what one decoding step reads besides the ring (built once per cache, not per step): RoPE's rotations
    as complex numbers by position, the attention mask's rows by position, where each slot's keys and values
    start in a layer's ring, and the step itself."""

    def __init__(self, model: GPT, slots: int, device: str | torch.device, dtype: torch.dtype, positions: int):
        c = model.config
        W = c.block_size
        self.kv = torch.zeros((c.n_layer, 2, slots, c.n_head, W, c.n_embd // c.n_head), device=device, dtype=dtype)
        self.width = W
        angles = torch.outer(torch.arange(positions, dtype=torch.float64, device=device), model._inv_freq(device))
        self.rope = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)  # (positions, hs/2)
        # row p: 0 where key j <= p has been written, -inf where it has not (a slot's ring before it wraps)
        self.hidden = torch.full((W, W), float("-inf"), device=device).triu_(1)
        self.rows = _ring_rows(slots, c.n_head, W, device)
        built = _decode_step(model, self.kv)
        self.step, self.fused = built.step, built.fused
        self.graphs = _Graphs(self.step) if self.kv.is_cuda and CUDA_GRAPHS else None

    def decode(self, tokens: torch.Tensor, pos: torch.Tensor, width: int) -> torch.Tensor:
        """The step for tokens (S,) at positions pos (S,), reading `width` keys: logits (S, vocab). From a CUDA
        graph where the cache is on a GPU; those read a power of two of keys, at least 32 (the extra ones are
        hidden, and weigh exactly 0), so a few graphs serve every width."""
        if self.graphs is None:  # genq's kernel reads no mask: its step takes the table unsliced (1% at batch 1)
            hidden = self.hidden if self.fused else self.hidden[:, :width]
            return self.step(self.kv, self.rope, hidden, self.rows, tokens, pos)
        width = min(self.width, max(32, 1 << (width - 1).bit_length()))
        return self.graphs.run(self.kv, self.rope, self.hidden[:, :width], self.rows, tokens, pos)

    @property
    def k(self) -> torch.Tensor:
        """The keys (n_layer, slots, nh, block_size, hs)."""
        return self.kv[:, 0]

    @property
    def v(self) -> torch.Tensor:
        """The values (n_layer, slots, nh, block_size, hs)."""
        return self.kv[:, 1]

    def keep(self, slots: torch.Tensor) -> None:
        """Keep only `slots` (an index tensor), renumbered from 0 in that order."""
        self.kv = self.kv[:, :, slots]
        self.rows = _ring_rows(len(slots), self.kv.size(3), self.width, self.kv.device)
        if self.graphs is not None:
            self.graphs.clear()  # they read the old kv


# Decoding steps on a GPU replayed from CUDA graphs: a step of GPT-2 small's shape at batch 64 launches ~300
# kernels that run 1.4 ms on an H200, and launching them took 9 ms of the CPU's time; replayed, the engine made
# 29,512 tokens/s against 11,508 (bench/gpu_check.sh, 64 rows x 256 tokens). GENQ_CUDA_GRAPHS=0: eager.
CUDA_GRAPHS = os.environ.get("GENQ_CUDA_GRAPHS", "1") != "0"


@contextmanager
def cuda_graphs(enabled: bool) -> Iterator[None]:
    """Within the block, caches built decode with CUDA graphs or not (a benchmark's eager peer); then as before."""
    global CUDA_GRAPHS
    before, CUDA_GRAPHS = CUDA_GRAPHS, enabled
    try:
        yield
    finally:
        CUDA_GRAPHS = before


class _Graphs:
    """A decoding step captured as a CUDA graph per (kv, width, slots), replayed with new tokens and positions;
    eager from the first capture that fails (with a warning)."""

    def __init__(self, step: Callable[..., torch.Tensor]):
        self.step, self.pool, self.failed = step, None, False
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def clear(self) -> None:
        self.graphs.clear()

    def run(self, kv: torch.Tensor, rope: torch.Tensor, hidden: torch.Tensor, rows: torch.Tensor,
            tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.step(kv, rope, hidden, rows, tokens, pos)
        key = (kv.data_ptr(), kv.shape, hidden.size(1), tokens.size(0))
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(kv, rope, hidden, rows, tokens, pos)
            except RuntimeError as exc:
                warnings.warn(f"decoding without CUDA graphs: capturing one failed ({exc})", stacklevel=2)
                self.failed = True
                return self.step(kv, rope, hidden, rows, tokens, pos)
        graph, static_tokens, static_pos, out = self.graphs[key]
        static_tokens.copy_(tokens)
        static_pos.copy_(pos)
        graph.replay()
        return out.clone()  # the next replay overwrites out

    def _capture(self, kv, rope, hidden, rows, tokens, pos):
        """Warm up on a side stream (as CUDA graphs require), then capture. Each run writes the same keys and
        values at the same positions, so running the step here as well as in the replay changes nothing."""
        static_tokens, static_pos = tokens.clone(), pos.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.step(kv, rope, hidden, rows, static_tokens, static_pos)
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()  # the graphs share their working memory: one runs at a time
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):  # other threads go on
            out = self.step(kv, rope, hidden, rows, static_tokens, static_pos)
        return graph, static_tokens, static_pos, out


_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # GPT -> {what it was built for: _Step}
# Traced steps by the network's shape (not its weights, which are the trace's inputs): a training job's galleries
# and a worker's later jobs of the same shape decode on the first one's trace (tracing took 60 ms of a 100 ms
# gallery at the CPU recipe's shape). The TRACES_KEPT last used are kept: a worker serving many shapes over its
# life holds no more.
_TRACES: dict[tuple, torch.jit.ScriptFunction] = {}  # in order of use, the latest last
TRACES_KEPT = 16


@dataclass
class _Step:
    """A decoding step and what it was built from."""

    step: Callable[..., torch.Tensor]
    versions: tuple[int, ...]  # the parameters' versions it decodes with
    fused: bool = False  # it calls genq's attention kernel (which takes no mask)


def _decode_step(model: GPT, kv: torch.Tensor) -> _Step:
    """_decode on `model`'s weights, for caches like kv: traced on a CPU in float32 (a step is then mostly the
    interpreter's time between small kernels, and the trace runs them without Python; the same arithmetic).
    Kept per model, and built again once the weights have changed (an optimizer step, a load): the trace itself
    is kept per shape."""
    traced = kv.device.type == "cpu" and kv.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    params = list(model.parameters())
    key = (kv.device, kv.dtype, traced, tuple(p.data_ptr() for p in params))
    versions = tuple(p._version for p in params)
    steps = _STEPS.setdefault(model, {})
    built = steps.get(key)
    if built is None or built.versions != versions:
        built = _build(model, kv, traced, versions)
        steps.clear()
        steps[key] = built
    return built


def _build(model: GPT, kv: torch.Tensor, traced: bool, versions: tuple[int, ...]) -> _Step:
    c = model.config
    nh, hs = c.n_head, c.n_embd // c.n_head

    def transposed(weight: torch.Tensor) -> torch.Tensor:
        """weight (out, in) as (in, out) for torch.mm: a copy on a CPU (~10% less time a step than the
        transposed view there), the view elsewhere (no second copy of the weights in a GPU's memory)."""
        return weight.detach().t().contiguous() if traced else weight.detach().t()

    weights = [_decode_weights(block, transposed) for block in model.h]
    head = (_norm_args(model.ln_f), transposed(model.lm_head.weight), model.wte.weight.detach())
    fused = traced and hs % 8 == 0 and kernels.decode_attention()  # else torch's three calls per layer
    if not traced:  # views of the weights: always current
        return _Step(partial(_decode, weights, head, nh, hs, c.block_size, fused=fused), versions, fused)
    tensors, layout = _tensors((weights, head)), _layout((weights, head))
    shape = (kv.device, nh, hs, c.block_size, fused, layout, tuple(t.shape for t in tensors))
    trace = _TRACES.pop(shape, None)
    if trace is None:
        def step(kv, rope, hidden, rows, tokens, pos, *tensors):
            w, h = _filled(layout, iter(tensors))
            return _decode(w, h, nh, hs, c.block_size, kv, rope, hidden, rows, tokens, pos, fused)

        # on stand-ins: one slot, two keys read; the batch and the width come from the inputs, so any will do
        one = torch.zeros(1, dtype=torch.long)
        example = (torch.zeros_like(kv[:, :, :1]), torch.ones(2, hs // 2, dtype=torch.complex64),
                   torch.zeros(kv.size(4), 2), _ring_rows(1, nh, kv.size(4), kv.device), one, one, *tensors)
        trace = torch.jit.trace(step, example, check_trace=False)
        while len(_TRACES) >= TRACES_KEPT:
            del _TRACES[next(iter(_TRACES))]  # the least recently used
    _TRACES[shape] = trace
    return _Step(lambda *inputs: trace(*inputs, *tensors), versions, fused)


def _decode_weights(block: Block, transposed: Callable[[torch.Tensor], torch.Tensor]) -> tuple:
    """A block's weights as decode_slots uses them (detached): LayerNorms as layer_norm's arguments, matrices
    transposed for torch.mm."""
    attn, mlp = block.attn, block.mlp

    def mm(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
        return transposed(linear.weight), None if linear.bias is None else linear.bias.detach()

    return (_norm_args(block.ln_1), *mm(attn.c_attn), _norm_args(attn.qk_norm), *mm(attn.c_proj),
            _norm_args(block.ln_2), *mm(mlp.c_fc), *mm(mlp.c_proj))


def _tensors(tree) -> list[torch.Tensor]:
    """The tensors in nested tuples and lists, in order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    return [t for item in tree for t in _tensors(item)] if isinstance(tree, (tuple, list)) else []


_TENSOR = object()  # where a layout holds a tensor


def _layout(tree):
    """`tree` with each tensor replaced by _TENSOR: what a trace taking the tensors as inputs is built on."""
    if isinstance(tree, torch.Tensor):
        return _TENSOR
    return tuple(_layout(item) for item in tree) if isinstance(tree, (tuple, list)) else tree


def _filled(layout, tensors: Iterator[torch.Tensor]):
    """The tree of `layout` with its tensors taken, in order, from `tensors`."""
    if layout is _TENSOR:
        return next(tensors)
    return tuple(_filled(item, tensors) for item in layout) if isinstance(layout, tuple) else layout


def _norm_args(ln: nn.LayerNorm) -> tuple:
    return ln.normalized_shape, ln.weight.detach(), None if ln.bias is None else ln.bias.detach(), ln.eps


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in `dtype`; no call at all when it already is (a call costs more than a step's small kernels)."""
    return x if x.dtype == dtype else x.to(dtype)


def _norm(x: torch.Tensor, args: tuple) -> torch.Tensor:
    return torch.layer_norm(x, *args)


def _linear(x: torch.Tensor, w_t: torch.Tensor, b: torch.Tensor | None, residual: torch.Tensor | None = None,
            ) -> torch.Tensor:
    """residual + x @ w_t + b in as few kernels as the arguments allow (addmm adds the residual)."""
    y = torch.mm(x, w_t) if residual is None else torch.addmm(residual, x, w_t)
    return y if b is None else y.add_(b)


def _turn(qk: torch.Tensor, norm_args: tuple, turn: torch.Tensor, n: int, hs: int) -> torch.Tensor:
    """Normalise the queries and keys qk (S, n = 2 nh, hs), a view of the step's qkv, and turn them by RoPE's
    `turn` (S, 1, hs/2) as rotate() does (in float32), in place: the keys then lie beside the values, to be copied
    to the cache as they are (no stack)."""
    pairs = (-1, n, hs // 2, 2)
    turned = torch.view_as_complex(_as(_norm(qk, norm_args), torch.float32).view(pairs))
    if qk.dtype == torch.float32:  # the product written straight into qk: one kernel
        return torch.mul(turned, turn, out=torch.view_as_complex(qk.view(pairs)))
    return qk.copy_(torch.view_as_real(turned * turn).view(-1, n, hs))


def _ring_rows(slots: int, nh: int, W: int, device: str | torch.device) -> torch.Tensor:
    """(slots, 2 nh): where slot s's ring of key (t = 0) and value (t = 1) of head h starts in kv[layer] seen as
    rows of hs, in the order (s, t, h) that the step's qkv holds them in. Contiguous: with one head the reshape
    is a strided view, and the step's sums with it could not be flattened by view()."""
    rows = torch.arange(2 * slots * nh, device=device).view(2, slots, nh) * W
    return rows.transpose(0, 1).reshape(slots, -1).contiguous()


def _decode(weights: list[tuple], head: tuple, nh: int, hs: int, W: int, kv: torch.Tensor, rope: torch.Tensor,
            hidden: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor,
            fused: bool = False) -> torch.Tensor:
    """GPT.decode_slots' step on the cache's tensors: kv (n_layer, 2, S, nh, W, hs), rope (positions, hs/2),
    hidden (W, width): the mask's rows, read up to the widest position, rows (S, 2 nh): _ring_rows (both for torch's
    attention); fused: the new keys' writes and the attention by genq's kernel (kernels.py), which reads each key
    and value once and only those a slot has written, else by torch's. The model's
    sizes are constants; the batch S is -1 in every view, and width the one size read from a tensor, so that one
    trace serves every batch and width with no size arithmetic (traced, each size and sum was an op of its own:
    ~90 of a step's ~280)."""
    turn = rope.index_select(0, pos)[:, None]  # (S, 1, hs/2) complex: RoPE at each row's position
    scale = 1.0 / math.sqrt(hs)
    if fused:
        layers = kv.unbind(0)  # per layer (2, S, nh, W, hs)
    else:
        width = hidden.size(1)
        where = (rows + (pos % W)[:, None]).view(-1)  # each new key's and value's row in kv[layer] seen as (-1, hs)
        rings = kv.view(len(weights), -1, hs).unbind(0)  # per layer, kv[layer] as rows of hs
        mask = hidden.index_select(0, pos.clamp(max=W - 1))  # (S, width)
        hidden = mask[:, None, None, :].expand(-1, nh, -1, -1).flatten(0, 1)  # (S nh, 1, width)
        keys = kv[:, 0, :, :, :width].flatten(1, 2).transpose(2, 3).unbind(0)  # per layer (S nh, hs, width): views
        values = kv[:, 1, :, :, :width].flatten(1, 2).unbind(0)  # per layer (S nh, width, hs)
    x = head[2].index_select(0, tokens)  # (S, C)
    for layer, (ln_1, qkv_t, qkv_b, qk_norm, proj_t, proj_b, ln_2, fc_t, fc_b, out_t, out_b) in enumerate(weights):
        qkv = _linear(_norm(x, ln_1), qkv_t, qkv_b).view(-1, 3 * nh, hs)
        _turn(qkv[:, :2 * nh], qk_norm, turn, 2 * nh, hs)
        if fused:  # the key and the value written to the rings, then the query's attention: (S nh, hs)
            y = torch.ops.genq.decode_attention(qkv, layers[layer], pos, scale)
        else:  # one query per row: two batched matrix-vector products (SDPA's CPU kernel is tuned for long queries)
            rings[layer].index_copy_(0, where, _as(qkv[:, nh:].reshape(-1, hs), kv.dtype))  # the key and the value
            q = _as(qkv[:, :nh].reshape(-1, 1, hs), kv.dtype)
            scores = torch.baddbmm(_as(hidden, kv.dtype), q, keys[layer], alpha=scale)  # (S nh, 1, width)
            y = torch.bmm(_as(torch.softmax(scores, dim=-1, dtype=torch.float32), kv.dtype), values[layer])
        x = _linear(_as(y.view(-1, nh * hs), x.dtype), proj_t, proj_b, residual=x)
        h = _linear(_norm(x, ln_2), fc_t, fc_b).relu_()
        x = _linear(h.mul_(h), out_t, out_b, residual=x)  # relu(h)^2 (the MLP's ReLUSquared, forward only)
    ln_f, head_t, _ = head
    return torch.mm(_norm(x, ln_f), head_t)
