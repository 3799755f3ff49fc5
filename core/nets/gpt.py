"""A GPT language model in the style of nanoGPT, with a KV cache for incremental decoding.

Attention is softmax(Q K^T / sqrt(d_k)) V (torch's scaled_dot_product_attention; the article's formula
divides twice). The token embedding and the output head share their weights.

Generation goes through `step(idx, cache)`: the first call reads the prompt and fills the cache, each later
call feeds only the new token. Positions are learned and absolute, so once the cache holds `block_size`
tokens the window slides: the newest `keep` tokens are re-read from position 0 and decoding goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm layers: nanoGPT found them slightly worse and slower


class KVCache:
    """Per-layer keys and values of the tokens read so far, plus those tokens (to re-read when full)."""

    def __init__(self, n_layer: int):
        self.kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer
        self.tokens: torch.Tensor | None = None  # (B, L) the tokens whose keys/values are cached

    @property
    def length(self) -> int:
        return 0 if self.tokens is None else self.tokens.size(1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.dropout = config.n_head, config.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            if cache.kv[layer] is not None:
                pk, pv = cache.kv[layer]
                past = pk.size(2)
                k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
            cache.kv[layer] = (k, v)
        if past == 0:
            mask, causal = None, True
        elif T == 1:
            mask, causal = None, False  # one new query may see every cached key
        else:  # query i sits at position past + i and sees keys 0..past+i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.context_window = config.block_size  # what sample.generate crops to without a cache
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
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
        """Parameters, without the position embeddings (as nanoGPT counts)."""
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, vocab), and the mean cross-entropy when targets (B, T) are given."""
        B, T = idx.size()
        start = 0 if cache is None else cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        x = self.ln_f(x)
        if cache is not None:
            cache.tokens = idx if cache.tokens is None else torch.cat([cache.tokens, idx], dim=1)
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def step(self, idx: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        """Incremental decoding: feed new tokens idx (B, T); return next-token logits (B, vocab), cache."""
        bs = self.config.block_size
        if cache is None:
            cache = KVCache(self.config.n_layer)
            idx = idx[:, -bs:]
        elif cache.length + idx.size(1) > bs:
            # window full: re-read the newest tokens from position 0, so decoding continues
            # for a while before the next re-read (keep = 3/4 of a block)
            keep = max(1, bs - bs // 4)
            idx = torch.cat([cache.tokens, idx], dim=1)[:, -keep:]
            cache = KVCache(self.config.n_layer)
        logits, _ = self(idx, cache=cache)
        return logits[:, -1, :], cache

    def optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.99),
                  device: str = "cpu") -> torch.optim.AdamW:
        """AdamW with weight decay on matrices and embeddings only (nanoGPT)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.startswith("cuda") or None)
