"""Convolutional VAE (Kingma & Welling 2014): encoder -> (mu, logvar), reparameterised z, decoder.

Pixels in [0, 1] are modelled as Bernoulli probabilities (the usual MNIST choice), so the
reconstruction term is a per-image sum of binary cross-entropies and the loss is the negative ELBO
in nats per image: recon + beta * KL(q(z|x) || N(0, I)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VAEConfig:
    image_size: int  # a power of two >= 8
    channels: int
    z_dim: int
    base_channels: int

    @property
    def stages(self) -> int:
        return int(math.log2(self.image_size)) - 2


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        width, enc = cfg.base_channels, []
        c_in = cfg.channels
        for _ in range(cfg.stages):  # image_size -> ... -> 4
            enc += [nn.Conv2d(c_in, width, 4, 2, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
            c_in, width = width, width * 2
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.width0 = c_in
        self.to_stats = nn.Linear(c_in * 16, 2 * cfg.z_dim)  # -> (mu, logvar)
        self.from_z = nn.Sequential(nn.Linear(cfg.z_dim, c_in * 16), nn.ReLU())
        dec, width = [], c_in
        for _ in range(cfg.stages - 1):  # 4 -> ... -> image_size / 2
            dec += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        dec += [nn.ConvTranspose2d(width, cfg.channels, 4, 2, 1)]  # logits of pixel intensities
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, S, S) in [0, 1] -> mu, logvar (B, z_dim)."""
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) -> pixel logits (B, C, S, S)."""
        return self.decoder(self.from_z(z).view(len(z), self.width0, 4, 4))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) -> images (B, C, S, S) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x -> (pixel logits, mu, logvar), sampling z = mu + sigma * eps."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode_logits(z), mu, logvar

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction through the posterior mean."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from z ~ N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.cfg.z_dim, generator=generator).to(device)
        return self.decode(z)


def loss_terms(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image reconstruction (BCE summed over pixels) and KL to N(0, I), both (B,) in nats."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return recon, kl


def vae_loss(model: VAE, x: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over the batch of recon + beta * KL, with the parts for logging (detached tensors: no host sync)."""
    logits, mu, logvar = model(x)
    recon, kl = loss_terms(logits, x, mu, logvar)
    loss = (recon + beta * kl).mean()
    return loss, {"recon": recon.mean().detach(), "kl": kl.mean().detach()}
