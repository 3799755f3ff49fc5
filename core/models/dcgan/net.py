"""DCGAN (Radford et al. 2015): a transposed-conv generator and a strided-conv discriminator.

Conditional variant: the generator takes a class distribution `cond` (B, n_classes) -- a one-hot for a
class, or the text encoder's softmax for a prompt -- through a linear embedding concatenated to z. The
discriminator is a projection discriminator (Miyato & Koyama 2018) with an auxiliary classifier head
(AC-GAN, Odena et al. 2017); the auxiliary head makes the generator draw the requested class reliably
after a few thousand CPU steps. The adversarial loss is the real log-likelihood (BCE with logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DCGANConfig:
    image_size: int  # a power of two >= 8
    channels: int  # 1 grayscale, 3 RGB
    z_dim: int
    base_channels: int  # width of the widest (4x4) generator layer is base_channels * 2**(stages-1)
    n_classes: int = 0  # 0: unconditional
    embed_dim: int = 32

    @property
    def stages(self) -> int:
        """Number of x2 resolution steps between 4x4 and image_size."""
        return int(math.log2(self.image_size)) - 2


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.base_channels * 2 ** (cfg.stages - 1)
        in_dim = cfg.z_dim + (cfg.embed_dim if cfg.n_classes else 0)
        self.embed = nn.Linear(cfg.n_classes, cfg.embed_dim, bias=False) if cfg.n_classes else None
        self.project = nn.Sequential(nn.Linear(in_dim, width * 16, bias=False), nn.BatchNorm1d(width * 16), nn.ReLU())
        layers: list[nn.Module] = []
        for _ in range(cfg.stages - 1):  # 4 -> 8 -> ... -> image_size / 2
            up = nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False)
            layers += [up, nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        layers += [nn.ConvTranspose2d(width, cfg.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.width0 = cfg.base_channels * 2 ** (cfg.stages - 1)
        self.apply(_init)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, z_dim), cond (B, n_classes) -> images (B, C, S, S) in [-1, 1]."""
        if self.embed is not None:
            if cond is None:
                raise ValueError("this generator is conditional: pass cond (B, n_classes)")
            z = torch.cat([z, self.embed(cond)], dim=1)
        h = self.project(z).view(len(z), self.width0, 4, 4)
        return self.net(h)


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.base_channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]  # no BN on input
        for _ in range(cfg.stages - 1):  # image_size / 2 -> ... -> 4
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2)]
            width *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        feat = width * 16
        self.adv = nn.Linear(feat, 1)
        if cfg.n_classes:
            self.project = nn.Linear(cfg.n_classes, feat, bias=False)  # projection term <embed(y), phi(x)>
            self.aux = nn.Linear(feat, cfg.n_classes)  # auxiliary classifier
        self.apply(_init)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, C, S, S) -> (real/fake logit (B,), class logits (B, n_classes) or None)."""
        h = self.features(x)
        logit = self.adv(h).squeeze(1)
        if not self.cfg.n_classes:
            return logit, None
        if cond is not None:
            logit = logit + (self.project(cond) * h).sum(dim=1)
        return logit, self.aux(h)


def _init(m: nn.Module) -> None:
    # DCGAN paper: weights N(0, 0.02); BatchNorm gain N(1, 0.02).
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def d_loss(D: Discriminator, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor | None = None,
           labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminator loss: -log D(x) - log(1 - D(G(z))) (BCE with logits), plus the auxiliary class loss; with
    statistics for logging (detached tensors: no host sync)."""
    real_logit, real_cls = D(real, cond)
    fake_logit, _ = D(fake.detach(), cond)
    adv = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
           + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
    loss, stats = adv, {"d_adv": adv.detach()}
    if real_cls is not None and labels is not None:
        cls = F.cross_entropy(real_cls, labels)  # learn classes from real images only
        loss = loss + cls
        stats["d_cls"] = cls.detach()
    stats["d_real"] = torch.sigmoid(real_logit).mean().detach()
    stats["d_fake"] = torch.sigmoid(fake_logit).mean().detach()
    return loss, stats


def g_loss(D: Discriminator, fake: torch.Tensor, cond: torch.Tensor | None = None,
           labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Non-saturating generator loss -log D(G(z)), plus making D's classifier see the requested class; with
    statistics for logging (detached tensors)."""
    logit, cls_logits = D(fake, cond)
    adv = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
    loss, stats = adv, {"g_adv": adv.detach()}
    if cls_logits is not None and labels is not None:
        cls = F.cross_entropy(cls_logits, labels)
        loss = loss + cls
        stats["g_cls"] = cls.detach()
    return loss, stats
