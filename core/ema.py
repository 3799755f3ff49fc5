"""An exponential moving average of a model's weights (Polyak averaging), the model a job's evaluations, samples
and checkpoints show, while training goes on with the trained weights.

Mid-run, with the learning rate still high, the trained weights jitter around a valley whose floor the average
sits nearer. With nanoGPT's CPU recipe (2000 steps, lr 1e-3 cosine, seeds 1337 / 1 / 2 / 7, in process) the
average of decay 0.95 (about the last 20 steps) was at val/loss 1.849 / 1.857 / 1.887 / 1.867 at step 400, where
the trained weights were at 1.899 / 1.896 / 1.932 / 1.924 (decay 0.9 gained less, 0.98 about as much). As the
schedule decays the two meet: at step 2000, 1.5630 against 1.5669 (seed 1337).

A checkpoint holds the average as its model (what a generation job loads) and the trained weights in its state
(STATE_KEY), so a resumed run goes on from both exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

STATE_KEY = "trained_weights"  # a checkpoint's state: the trained weights, its model being their average


def weights(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    """The parameters of `modules`, tied ones once, detached: views whose in-place copies reach the modules (and
    bump their version, which traced copies of them watch)."""
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return [p.detach() for p in seen.values()]


# The average takes the weights in every EVERY-th step (decay**EVERY), not every step: on the CPU recipe (0.8M
# weights) taking them every step cost 0.5-0.7 ms of a 30 ms step (the average's traffic through the caches), every
# 4th step no more than the noise (in process, alternating rounds, Intel Xeon with AMX); the weights move little in
# 4 steps against the average's ~20.
EVERY = 4


class WeightAverage:
    """avg <- decay**EVERY avg + (1 - decay**EVERY) w after every EVERY-th step, over `params` (weights()),
    starting from their values: the moving average of decay `decay` a step."""

    def __init__(self, params: list[torch.Tensor], decay: float):
        self.params, self.decay = params, decay
        self.average = [p.clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the weights after step `step` (0-based), in every EVERY-th step."""
        if (step + 1) % EVERY == 0:
            torch._foreach_lerp_(self.average, self.params, 1 - self.decay**EVERY)

    @contextmanager
    def swapped_in(self) -> Iterator[list[torch.Tensor]]:
        """The average in the weights inside, the trained weights in its place (yielded); swapped back after. In
        place (whatever holds the weights sees them) and a tensor at a time: no more memory than the largest."""
        self._swap()
        try:
            yield self.average
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        for p, a in zip(self.params, self.average, strict=True):
            held = p.clone()
            p.copy_(a)
            a.copy_(held)


def start(modules: Iterable[nn.Module], decay: float, state: dict[str, Any] | None) -> WeightAverage | None:
    """The average of `modules`' weights (None when decay is 0), starting from the weights they hold now; then,
    where a resumed checkpoint's `state` holds trained weights (its model being their average), those go back
    into the modules to train on, whether or not this run averages."""
    params = weights(modules)
    average = WeightAverage(params, decay) if decay else None
    if (trained := (state or {}).get(STATE_KEY)) is not None:
        torch._foreach_copy_(params, [t.to(p.device) for p, t in zip(params, trained, strict=True)])
    return average
