"""A GPT language model in the style of nanoGPT, with a KV cache for incremental decoding.

nanoGPT's model.py with three well-known changes, measured one after the other on char-level tinyshakespeare
with nanoGPT's CPU recipe (2000 steps; loss on the whole validation split, mean of two seeds):
nanoGPT's network 1.90;
- rotary position embeddings (RoPE, Su et al. 2021) on queries and keys instead of learned positions: 1.78;
- a squared-ReLU MLP (So et al. 2021, "Primer") instead of GELU, the same width: 1.67;
- QK-norm, a LayerNorm on every head's queries and keys (Dehghani et al. 2023): 1.65.
Tried and left out: RMSNorm (no better, and its backward takes 3x LayerNorm's on a CPU), SwiGLU (as good as
ReLU^2, slower), zero-initialised output projections (no better), an untied head, a norm after the
embedding (both worse).
Attention is softmax(Q K^T / sqrt(d_k)) V (genq.core.models.gpt.attention: torch's scaled_dot_product_attention,
or on a CPU two products around a softmax where they run faster). The token embedding and the output head share
their weights.

Each token attends to the newest `block_size` tokens, itself included: with RoPE a score depends only on
the distance between two tokens, so the window can slide. A longer input (or generation past block_size)
sees the same distances as training did, and decoding with the cache never has to re-read its context.
Generation goes through `step(idx, cache)`: the first call reads the prompt and fills the cache, each later
call feeds only the new token.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genq.core.device import fused_adamw
from genq.core.models.gpt.attention import attention
from genq.core.models.gpt.slots import SlotCache


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int  # the attention window: a token sees itself and the block_size - 1 before it
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm layers: nanoGPT found them slightly worse and slower
    rope_base: float = 10000.0  # RoPE's wavelengths run from 2*pi to 2*pi*rope_base positions


class KVCache:
    """Per layer, the rotated keys and the values of the newest block_size - 1 tokens read so far."""

    def __init__(self, n_layer: int, block_size: int):
        self.kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer
        self.keep = block_size - 1  # what the next token may see besides itself
        self.pos = 0  # tokens read so far: the position of the next one

    @property
    def length(self) -> int:
        """Keys held per layer (at most block_size - 1)."""
        return 0 if self.kv[0] is None else self.kv[0][0].size(2)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys/values (B, nh, T, hs); returns the held ones plus these, keeps the newest."""
        if self.kv[layer] is not None:
            pk, pv = self.kv[layer]
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.kv[layer] = (k[:, :, -self.keep:], v[:, :, -self.keep:])
        return k, v


def rotate(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """RoPE: turn each pair (x[2i], x[2i+1]) of x (B, T, heads, hs) by an angle whose cosine and sine are
    rope (T, 1, hs/2, 2): a complex multiplication of the pairs by (cos + i sin).
    Eager, it is one complex kernel forward and one backward (a sixth of the time of the real arithmetic's
    eight on a CPU, bench/train.py); under torch.compile it is real arithmetic, the same products, because
    inductor generates no code for complex tensors and would cut the graph around them."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, T, heads, hs/2, 2)
    if torch.compiler.is_compiling():
        a, b = pairs.unbind(-1)
        cos, sin = rope.unbind(-1)
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).to(x.dtype)
    turned = torch.view_as_complex(pairs.contiguous()) * torch.view_as_complex(rope)
    return torch.view_as_real(turned).flatten(-2).to(x.dtype)


def rope_frequencies(hs: int, base: float, device: str | torch.device) -> torch.Tensor:
    """RoPE's angular frequencies (hs/2,) in float64, for heads of hs channels."""
    return base ** -(torch.arange(0, hs, 2, dtype=torch.float64, device=device) / hs)


def _rope_angles(hs: int, base: float, start: int, T: int, device: torch.device) -> torch.Tensor:
    """RoPE's cosines and sines (T, 1, hs/2, 2) for positions start..start+T-1 (float64 angles: exact at any
    position)."""
    pos = torch.arange(start, start + T, dtype=torch.float64, device=device)
    angles = torch.outer(pos, rope_frequencies(hs, base, device))[:, None, :]  # radians
    return torch.stack((angles.cos(), angles.sin()), dim=-1).float()


@functools.lru_cache(maxsize=16)
def _rope_table(hs: int, base: float, T: int, device: torch.device) -> torch.Tensor:
    """_rope_angles from position 0, kept. Built outside inference mode even when first asked for there: an
    inference tensor cannot be saved for a backward, and training's rotation saves it."""
    with torch.inference_mode(False):
        return _rope_angles(hs, base, 0, T, device)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0 and (config.n_embd // config.n_head) % 2 == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.qk_norm = nn.LayerNorm(config.n_embd // config.n_head, bias=config.bias)  # per head
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.dropout = config.n_head, config.dropout

    def forward(self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.size()
        nh = self.n_head
        # (B, T, 3 nh, hs): the heads of q, then k, then v; split, not sliced: the backward is one copy of the
        # gradients, not a zeroed tensor per slice and their sum
        qk, v = self.c_attn(x).view(B, T, 3 * nh, C // nh).split([2 * nh, nh], dim=2)
        # q and k heads normalised and turned in one go, then in attention's dtype. In the norm's dtype first (what
        # autocast's LayerNorm casts to): one copy of the strided heads, not a gather then a cast (an evaluation of
        # the CPU recipe 10% faster, the same val/loss)
        qk = rotate(self.qk_norm(qk.to(self.qk_norm.weight.dtype)), rope)
        q, k = qk.to(torch.float32 if x.device.type == "cpu" else v.dtype).transpose(1, 2).split(nh, dim=1)
        v = v.transpose(1, 2)  # (B, nh, T, hs), as q and k
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, past + T, hs)
        causal = mask is None and T > 1  # no past keys and T <= block_size: plain causal attention
        y = attention(q, k, v, mask, causal, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class ReLUSquared(torch.autograd.Function):
    """relu(h)^2 (Primer) with a two-pass backward: autograd's own takes twice as many on a CPU."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        r = F.relu(h)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (grad * r).mul_(2.0)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, 4C)
        # Outside autograd (evaluation, sampling) relu^2 runs in place, allocating nothing: nanoGPT's CPU recipe's
        # evaluation took 0.35 s against 0.40 (2-core AMD EPYC with AVX2, the same val/loss).
        h = ReLUSquared.apply(h) if torch.is_grad_enabled() else F.relu_(h).square_()
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    context_window = None  # reads any length (attention slides): sample.generate never crops its input

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Training FLOPs per token (PaLM's appendix B, nanoGPT's estimate_mfu): 6N for the weights' matrix
        products forward and backward (the tied head among them), 12 L d T for attention's scores and sums."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * c.block_size

    def _rope(self, start: int, T: int, device: torch.device) -> torch.Tensor:
        """RoPE's cosines and sines (T, 1, hs/2, 2) for positions start..start+T-1; those from position 0, every
        training step's, built once (eight small kernels a forward, 2% of the CPU recipe's step)."""
        hs = self.config.n_embd // self.config.n_head
        if start == 0 and not torch.compiler.is_compiling():
            return _rope_table(hs, self.config.rope_base, T, device)
        return _rope_angles(hs, self.config.rope_base, start, T, device)

    def _mask(self, past: int, T: int, device: torch.device) -> torch.Tensor | None:
        """(T, past + T) bool, True where query i (at past + i) may see key j: the newest block_size keys.

        None for the plain causal case (no past, T <= block_size) and for one query (the cache holds no more
        than it may see)."""
        if T == 1 or (past == 0 and T <= self.config.block_size):
            return None
        i = torch.arange(past, past + T, device=device)[:, None]
        j = torch.arange(past + T, device=device)[None, :]
        return (j <= i) & (j > i - self.config.block_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, vocab), and the mean cross-entropy when targets (B, T) are given.

        With a cache, idx continues the tokens read before and the cache takes in its keys and values."""
        T = idx.size(1)
        past, start = (0, 0) if cache is None else (cache.length, cache.pos)
        rope, mask = self._rope(start, T, idx.device), self._mask(past, T, idx.device)
        x = self.drop(self.wte(idx))
        for i, block in enumerate(self.h):
            x = block(x, rope, mask, cache, i)
        x = self.ln_f(x)
        if cache is not None:
            cache.pos += T
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def step(self, idx: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        """Incremental decoding: feed new tokens idx (B, T); return next-token logits (B, vocab), cache."""
        if cache is None:
            cache = KVCache(self.config.n_layer, self.config.block_size)
        for chunk in idx.split(self.config.block_size, dim=1):  # a long prompt in blocks: bounded memory
            logits, _ = self(chunk, cache=cache)
        return logits[:, -1, :], cache

    # -- continuous batching (genq.core.batch): a slot per row, each slot a ring of block_size keys ------------
    def new_slots(self, slots: int, device: str | torch.device, dtype: torch.dtype, positions: int) -> SlotCache:
        """An empty cache of `slots` rows for decode_slots, for positions below `positions`."""
        return SlotCache(self, slots, device, dtype, positions)

    def slot_bytes(self, dtype_bytes: int = 4) -> int:
        """Memory one slot takes: its keys and values, plus the activations of one decoding row (a bound)."""
        c = self.config
        return 2 * c.n_layer * c.block_size * c.n_embd * dtype_bytes + 16 * (4 * c.n_embd + c.vocab_size)

    @torch.no_grad()
    def prefill_slots(self, cache: SlotCache, slots: list[int], prompts: list[list[int]]) -> torch.Tensor:
        """Read prompts into `slots`; return the logits (n, vocab) of the token after each. Prompts that fit
        the window are read together, right-padded (causal attention: padding after a token cannot change it)."""
        if max(map(len, prompts)) > self.config.block_size:
            return torch.cat([self._prefill_one(cache, s, p) for s, p in zip(slots, prompts, strict=True)])
        T = max(map(len, prompts))
        idx = torch.tensor([p + [0] * (T - len(p)) for p in prompts], device=cache.kv.device)
        kv = KVCache(self.config.n_layer, T + 1)  # keeps all T
        logits, _ = self(idx, cache=kv)
        read = torch.stack([torch.stack(pair) for pair in kv.kv]).to(cache.kv.dtype)  # (n_layer, 2, n, nh, T, hs)
        for row, (slot, prompt) in enumerate(zip(slots, prompts, strict=True)):
            cache.kv[:, :, slot, :, :len(prompt)] = read[:, :, row, :, :len(prompt)]
        return logits[torch.arange(len(prompts)), torch.tensor([len(p) - 1 for p in prompts])]

    def _prefill_one(self, cache: SlotCache, slot: int, prompt: list[int]) -> torch.Tensor:
        """A prompt of any length into `slot` (read a block at a time); its next-token logits (1, vocab)."""
        idx = torch.tensor([prompt], device=cache.kv.device)
        logits, kv = self.step(idx, None)
        T, W = idx.size(1), cache.width
        for layer, (k, v) in enumerate(kv.kv):  # the newest min(T, block_size - 1) tokens' (1, nh, L, hs)
            ring = torch.arange(T - k.size(2), T, device=k.device) % W
            cache.k[layer][slot][:, ring] = k[0].to(cache.kv.dtype)
            cache.v[layer][slot][:, ring] = v[0].to(cache.kv.dtype)
        return logits

    def decode_slots(self, cache: SlotCache, tokens: torch.Tensor, pos: torch.Tensor, width: int) -> torch.Tensor:
        """One token per slot: tokens (S,) at positions pos (S,) -> next-token logits (S, vocab).

        Slot s keeps the keys of position p at ring index p % block_size, so the newest block_size keys are
        always the ones held; `width` (the largest position + 1, at most block_size) bounds the keys read.
        The step is genq.core.models.gpt.slots' (a few kernels a layer on prepared weights, traced on a CPU,
        replayed from CUDA graphs on a GPU). No no_grad here: the step reads detached weights, so records no graph,
        and entering no_grad took 2-3 us of a 150 us step at batch 1."""
        return cache.decode(tokens, pos, width)

    def _inv_freq(self, device: str | torch.device) -> torch.Tensor:
        """RoPE's angular frequencies (hs/2,) in float64, as _rope uses them."""
        return rope_frequencies(self.config.n_embd // self.config.n_head, self.config.rope_base, device)

    def optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.99),
                  device: str = "cpu") -> torch.optim.AdamW:
        """AdamW with weight decay on matrices and embeddings only (nanoGPT); the fused kernel on CPU and CUDA
        (on the CPU a quarter of the time of the per-tensor loop: ~2% of a step of the CPU recipe), the
        default elsewhere."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused_adamw(device))
