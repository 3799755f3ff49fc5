"""Optimizers the recipes share: Muon for a transformer's hidden weight matrices, AdamW for the rest.

Muon (Jordan et al. 2024, the modded-nanogpt speedrun's optimizer) orthogonalises each matrix' momentum with a
few Newton-Schulz iterations, so every direction of the update moves as far. torch.optim.Muon implements it;
with adjust_lr_fn="match_rms_adamw" (Liu et al. 2025, "Muon is Scalable for LLM Training") each update has
the root-mean-square size of an AdamW update, so the learning rate and weight decay tuned for AdamW keep their
meaning: a user's `lr` means the same thing whichever optimizer runs.
Embeddings, the (tied) output head, norms and biases are not hidden matrices: AdamW trains them, as in the
speedrun.
"""

from __future__ import annotations

import torch
from torch import nn

from genq.core.device import fused_adamw


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


def muon(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Muon:
    """torch.optim.Muon for 2-D `params`, its update scaled to AdamW's size: AdamW's lr and weight decay apply."""
    return torch.optim.Muon(params, lr=lr, weight_decay=weight_decay, momentum=0.95, nesterov=True,
                            adjust_lr_fn="match_rms_adamw")


def muon_with_adamw(model: nn.Module, blocks: nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float], device: str) -> dict[str, torch.optim.Optimizer]:
    """{"optimizer": AdamW for everything but `blocks`' matrices, "muon": Muon for those}."""
    matrices = hidden_matrices(blocks)
    chosen = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    return {"optimizer": adamw(rest, lr, weight_decay, betas, device), "muon": muon(matrices, lr, weight_decay)}
