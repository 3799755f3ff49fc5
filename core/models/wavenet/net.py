"""WaveNet (van den Oord et al. 2016): causal dilated convolutions with gated activations, residual and
skip connections, a 256-way softmax over mu-law codes, and optional global conditioning on a label.

Generation is the queue-based fast algorithm (Paine et al. 2016): every layer keeps a ring buffer of its
past inputs at lag `dilation`, so one new sample costs one small matmul per layer instead of a forward
pass over the whole receptive field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MU = 255  # mu-law with 256 levels
STOP_EVERY = 1000  # samples per clip between generate()'s stop checks


def mu_law_encode(x: torch.Tensor | np.ndarray, mu: int = MU) -> torch.Tensor:
    """Float audio in [-1, 1] -> int64 codes in [0, mu]."""
    x = torch.as_tensor(x, dtype=torch.float32).clamp(-1, 1)
    f = torch.sign(x) * torch.log1p(mu * x.abs()) / np.log1p(mu)
    return ((f + 1) / 2 * mu + 0.5).floor().long()


def mu_law_decode(codes: torch.Tensor, mu: int = MU) -> torch.Tensor:
    """Int codes in [0, mu] -> float audio in [-1, 1]."""
    f = 2 * codes.float() / mu - 1
    return torch.sign(f) * ((1 + mu) ** f.abs() - 1) / mu


@dataclass
class WaveNetConfig:
    n_layers: int
    residual_channels: int
    skip_channels: int
    dilation_cycle: int = 10  # dilations 1, 2, ..., 2**(cycle-1), then again
    n_classes: int = 0  # > 0: globally conditioned on a label
    sample_rate: int = 8000
    quantization: int = MU + 1

    @property
    def dilations(self) -> list[int]:
        return [2 ** (i % self.dilation_cycle) for i in range(self.n_layers)]

    @property
    def receptive_field(self) -> int:
        return sum(self.dilations) + 2  # + the causal input conv and the current sample


class CausalConv1d(nn.Conv1d):
    """Kernel-2 convolution that sees only the present and the sample `dilation` steps back."""

    def __init__(self, c_in: int, c_out: int, dilation: int = 1):
        super().__init__(c_in, c_out, kernel_size=2, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.dilation[0], 0)))  # left-pad: output t uses t - d and t


class ResidualBlock(nn.Module):
    def __init__(self, cfg: WaveNetConfig, dilation: int):
        super().__init__()
        r = cfg.residual_channels
        self.dilation = dilation
        self.conv = CausalConv1d(r, 2 * r, dilation)  # filter and gate halves
        self.cond = nn.Embedding(cfg.n_classes, 2 * r) if cfg.n_classes else None
        self.res = nn.Conv1d(r, r, 1)
        self.skip = nn.Conv1d(r, cfg.skip_channels, 1)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, R, T) -> (next residual (B, R, T), skip (B, S, T))."""
        a = self.conv(x)
        if self.cond is not None:
            a = a + self.cond(label).unsqueeze(-1)
        filt, gate = a.chunk(2, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        return x + self.res(z), self.skip(z)


class WaveNet(nn.Module):
    def __init__(self, cfg: WaveNetConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.quantization, cfg.residual_channels)  # = one-hot input + 1x1 conv
        self.input_conv = CausalConv1d(cfg.residual_channels, cfg.residual_channels)
        self.blocks = nn.ModuleList(ResidualBlock(cfg, d) for d in cfg.dilations)
        self.out1 = nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1)
        self.out2 = nn.Conv1d(cfg.skip_channels, cfg.quantization, 1)

    def forward(self, codes: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """codes (B, T) int -> logits (B, 256, T) for the code at t + 1."""
        if self.cfg.n_classes and label is None:
            raise ValueError("this WaveNet is conditional: pass label (B,)")
        x = self.input_conv(self.embed(codes).transpose(1, 2))
        skips = 0
        for block in self.blocks:
            x, s = block(x, label)
            skips = skips + s
        return self.out2(F.relu(self.out1(F.relu(skips))))

    def loss(self, audio: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-sample cross-entropy (nats) over a batch of float audio (B, T + 1)."""
        codes = mu_law_encode(audio).to(audio.device)
        logits = self(codes[:, :-1], label)
        return F.cross_entropy(logits, codes[:, 1:])

    @torch.no_grad()
    def generate(self, n: int, length: int, label: torch.Tensor | None = None, temperature: float = 1.0,
                 generator: torch.Generator | None = None, stop=None) -> torch.Tensor:
        """Sample n clips of `length` samples (float in [-1, 1], (n, length)) starting from silence.

        `stop` is an optional callable checked every STOP_EVERY samples; when it returns true the clips end early.
        """
        state = FastState(self, n, label)
        code = torch.full((n,), self.cfg.quantization // 2, dtype=torch.long)  # silence
        out = torch.empty(n, length, dtype=torch.long)
        for t in range(length):
            probs = torch.softmax(state.step(code) / temperature, dim=-1).cpu()
            code = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            out[:, t] = code
            if stop is not None and t % STOP_EVERY == STOP_EVERY - 1 and stop():
                out = out[:, : t + 1]
                break
        return mu_law_decode(out)


class FastState:
    """Incremental inference: feed one code per clip, get the logits for the next (Paine et al. 2016)."""

    def __init__(self, net: WaveNet, n: int, label: torch.Tensor | None = None):
        cfg = net.cfg
        if cfg.n_classes and label is None:
            raise ValueError("this WaveNet is conditional: pass label (n,)")
        self.net, self.t, self.r = net, 0, cfg.residual_channels
        device = net.embed.weight.device
        self.device = device
        w = net.input_conv.weight  # (R, R, 2): taps [past, present]
        self.w_in = (w[:, :, 0].t(), w[:, :, 1].t(), net.input_conv.bias)
        self.prev = torch.zeros(n, self.r, device=device)  # the input conv's past (zero padding)
        self.layers = []
        for b in net.blocks:
            w = b.conv.weight  # (2R, R, 2)
            bias = b.conv.bias + (b.cond(label.to(device)) if b.cond is not None else 0)  # (2R,) or (n, 2R)
            w_out = torch.cat([b.res.weight[:, :, 0], b.skip.weight[:, :, 0]], dim=0).t()  # (R, R + S)
            b_out = torch.cat([b.res.bias, b.skip.bias])
            queue = torch.zeros(b.dilation, n, self.r, device=device)  # ring buffer: inputs at lag `dilation`
            self.layers.append((b.dilation, w[:, :, 0].t(), w[:, :, 1].t(), bias, w_out, b_out, queue))
        self.out = (net.out1.weight[:, :, 0].t(), net.out1.bias, net.out2.weight[:, :, 0].t(), net.out2.bias)

    @torch.no_grad()
    def step(self, code: torch.Tensor) -> torch.Tensor:
        """code (n,) at time t -> logits (n, 256) for time t + 1."""
        e = self.net.embed(code.to(self.device))
        w_past, w_now, b = self.w_in
        h = self.prev @ w_past + e @ w_now + b
        self.prev = e
        skips = 0
        for d, w_past, w_now, bias, w_out, b_out, queue in self.layers:
            slot = self.t % d
            past = queue[slot].clone()
            queue[slot] = h  # this input is the "past" of step t + d
            filt, gate = (past @ w_past + h @ w_now + bias).chunk(2, dim=1)
            rs = (torch.tanh(filt) * torch.sigmoid(gate)) @ w_out + b_out
            h = h + rs[:, : self.r]
            skips = skips + rs[:, self.r:]
        self.t += 1
        w1, b1, w2, b2 = self.out
        return F.relu(F.relu(skips) @ w1 + b1) @ w2 + b2
