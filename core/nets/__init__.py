"""The networks. Each module holds one network family and its config dataclass."""

from torch import nn


def size(*modules: nn.Module) -> str:
    """The parameter count of `modules` for a log line: "0.80M parameters"."""
    return f"{sum(p.numel() for m in modules for p in m.parameters()) / 1e6:.2f}M parameters"
