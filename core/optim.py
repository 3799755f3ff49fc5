"""Optimizers the recipes share: Muon for a transformer's hidden weight matrices, AdamW for the rest.

Muon (Jordan et al. 2024, the modded-nanogpt speedrun's optimizer) orthogonalises each matrix' momentum with a
few Newton-Schulz iterations, so every direction of the update moves as far. torch.optim.Muon implements it;
with adjust_lr_fn="match_rms_adamw" (Liu et al. 2025, "Muon is Scalable for LLM Training") each update has
the root-mean-square size of an AdamW update, so the learning rate and weight decay tuned for AdamW keep their
meaning: a user's `lr` means the same thing whichever optimizer runs.
Embeddings, the (tied) output head, norms and biases are not hidden matrices: AdamW trains them, as in the
speedrun.
torch's Muon runs Newton-Schulz in bfloat16, which a CPU without bf16 units emulates (seconds a step for the
CPU recipe's 4 x 4 small matrices); `Muon` below runs it in float32 there (in the iteration's Gram form for long
matrices: the same polynomial, fewer products), and batches it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genq.core.device import fused_adamw, matmul_dtype


def adamw(params: list[nn.Parameter], lr: float, weight_decay: float, betas: tuple[float, float],
          device: str) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (nanoGPT); the fused kernel where torch has it."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused_adamw(device))


def hidden_matrices(blocks: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights of `blocks` (a transformer's attention and MLP matrices): what Muon trains."""
    return [p for p in blocks.parameters() if p.requires_grad and p.dim() == 2]


def orthogonalise(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Newton-Schulz's approximate U V^T of each matrix of g (..., rows, cols) as torch.optim.Muon computes it,
    in `dtype` (torch's is bf16), returned in g's dtype."""
    a, b, c = coefficients
    x = g.to(dtype).reshape(-1, *g.shape[-2:])  # (matrices, rows, cols)
    wide = _is_wide(x)
    x = x if wide else x.mT  # (short, long): the Gram matrix x x^T is the small one
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= 1
    if dtype == torch.float32 and x.size(-1) > 1.5 * x.size(-2):
        x = _gram_newton_schulz(x, a, b, c, steps)
    else:
        for _ in range(steps):
            gram = x @ x.mT
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x if wide else x.mT).reshape(g.shape).to(g.dtype)


def _gram_newton_schulz(x: torch.Tensor, a: float, b: float, c: float, steps: int) -> torch.Tensor:
    """The same iterations for wide x (matrices, m, n) in the m x m space of its Gram matrix: each X_i is
    P_i X_0 with P_i a polynomial in X_0 X_0^T, so P_i and S_i = X_i X_i^T are m x m, and X_0 is multiplied once
    at the end. 2 m^2 n + (4 steps - 3) m^3 multiply-adds against steps (2 m^2 n + m^3): fewer where n > 1.5 m
    (the CPU recipe's 128 x 512 matrices: 0.55x; its Muon step on a 2-core AMD EPYC with AVX2 ~14 ms shorter).
    Float32 only: working with squared magnitudes costs it digits (1e-4 relative error on a rank-3 update, against
    the plain form's 3e-5), which float32 can spare and bf16 cannot."""
    s = x @ x.mT  # S_0 (matrices, m, m)
    p = None  # P_0 = I
    for i in range(steps):
        m = torch.baddbmm(s, s, s, beta=b, alpha=c)  # b S + c S^2 ...
        m.diagonal(dim1=-2, dim2=-1).add_(a)  # ... + a I: X_{i+1} = M X_i, M symmetric and commuting with S_i
        p = m if p is None else m @ p
        if i < steps - 1:
            s = m @ s @ m  # S_{i+1} = M S_i M^T
    return p @ x


class Muon(torch.optim.Muon):
    """torch.optim.Muon (its params, state and checkpoints) with Newton-Schulz batched over the matrices of one
    shape or its transpose: on the CPU recipe 3 batches for 16 matrices, 9.0 against 9.9 ms a step with a batch
    per shape on an Intel Xeon with AMX (one run on an AMD EPYC with AVX-512 BF16 measured it slower, 15.0 against
    13.9 ms; padding all 16 to one shape measured slower). In bf16 where the device multiplies bf16 fast (a GPU;
    a CPU with bf16 units, matrices 128 wide or more), in float32 elsewhere (a CPU without bf16 units emulates
    it)."""

    @torch.no_grad()
    def step(self, closure=None):
        """One Muon update of every parameter with a gradient."""
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        dtype = matmul_dtype(str(params[0].device), min(min(p.shape) for p in params))
        for group in self.param_groups:
            self._update(group, dtype)

    def _update(self, group: dict, dtype: torch.dtype) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
        updates = torch._foreach_lerp(grads, bufs, group["momentum"]) if group["nesterov"] else bufs
        lr = group["lr"]
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        # a tall matrix goes with the wide ones of its transposed shape (orthogonalise turns it wide anyway): the
        # MLP's two matrices of a transformer block in one batch
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(params):
            by_shape.setdefault(tuple(sorted(p.shape)), []).append(i)
        for same in by_shape.values():
            done = orthogonalise(torch.stack([_wide(updates[i]) for i in same]), group["ns_coefficients"],
                                 group["ns_steps"], group["eps"], dtype)
            for i, update in zip(same, done, strict=True):
                p = params[i]
                p.add_(update if _is_wide(p) else update.mT, alpha=-_adjusted_lr(lr, group["adjust_lr_fn"], p.shape))


def _is_wide(m: torch.Tensor) -> bool:
    return m.size(-2) <= m.size(-1)


def _wide(m: torch.Tensor) -> torch.Tensor:
    """m, or its transpose if it has more rows than columns."""
    return m if _is_wide(m) else m.mT


def _adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's learning rate for a matrix of `shape` ("match_rms_adamw": AdamW's update size)."""
    A, B = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(A, B))
    return lr * math.sqrt(max(1, A / B))


# Muon's momentum: 0.9 rather than torch's 0.95. nanoGPT's CPU recipe (2000 steps, eval on 20 batches) reached a
# lower val/loss at step 500 with it for each of three seeds (1.8500, 1.8362, 1.8596 against 1.8534, 1.8518,
# 1.8674), at step 400 for two of them, and the same at step 2000 (1.5651 against 1.5644, seed 1337).
MOMENTUM = 0.9


def muon(params: list[nn.Parameter], lr: float, weight_decay: float) -> Muon:
    """Muon for 2-D `params`, its update scaled to AdamW's size: AdamW's lr and weight decay apply."""
    return Muon(params, lr=lr, weight_decay=weight_decay, momentum=MOMENTUM, nesterov=True,
                adjust_lr_fn="match_rms_adamw")


def muon_with_adamw(model: nn.Module, blocks: nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float], device: str) -> dict[str, torch.optim.Optimizer]:
    """{"optimizer": AdamW for everything but `blocks`' matrices, "muon": Muon for those}."""
    matrices = hidden_matrices(blocks)
    chosen = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    return {"optimizer": adamw(rest, lr, weight_decay, betas, device), "muon": muon(matrices, lr, weight_decay)}
