"""Fixtures for the model library's tests: one torch thread, small texts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from genq.core import device as dev
from genq.core.api import DataSource, Hooks

torch.set_num_threads(1)

# A gpt small enough to train 60 steps in a second, evaluating twice (test_text_recipes, test_ema)
TINY_GPT = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 8, "lr": 3e-3,
            "max_steps": 60, "eval_interval": 30, "eval_iters": 2, "checkpoint_interval": 1000, "warmup_steps": 5}

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
) * 12


def fit_one_batch(loss_fn: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, steps: int) -> tuple[float, float]:
    """Take `steps` optimiser steps on loss_fn() (one fixed batch); (first loss, last loss)."""
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


class RecordingHooks(Hooks):
    """Hooks that remember what the job reported, and ask to stop at a chosen step."""

    def __init__(self, stop_at: int | None = None, reason: str = "cancel"):
        self.series: dict[str, list[tuple[int, float]]] = {}
        self.checkpoints: list[tuple[int, object]] = []
        self.galleries: list[tuple[int, list]] = []  # (step, samples) of each hooks.samples call
        self.progress_calls: list[tuple[int, int]] = []
        self.lines: list[str] = []
        self.stop_at, self.reason, self.asked = stop_at, reason, 0

    def metrics(self, step, values):
        for k, v in values.items():
            self.series.setdefault(k, []).append((step, v))

    def progress(self, done, total):
        self.progress_calls.append((done, total))

    def checkpoint(self, step, path):
        self.checkpoints.append((step, path))

    def samples(self, step, samples):
        self.galleries.append((step, samples))

    def stop_requested(self):
        # the loop asks once per step, so the (stop_at + 1)-th question comes before step `stop_at` runs
        self.asked += 1
        return self.reason if self.stop_at is not None and self.asked > self.stop_at else None

    def log(self, message):
        self.lines.append(message)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return DataSource(kind="text", path=path)


@pytest.fixture
def hooks():
    return RecordingHooks()


@pytest.fixture
def corpus() -> str:
    return TEXT


@pytest.fixture
def make_hooks():
    """RecordingHooks(stop_at=None, reason='cancel')."""
    return RecordingHooks


@pytest.fixture
def quick_evaluation(monkeypatch):
    """The media recipes' evaluation at test size: a 5-step classifier, 0.05 s of generated audio."""
    from genq.core.models.dcgan import recipe as dcgan_recipe
    from genq.core.models.vae import recipe as vae_recipe
    from genq.core.models.wavenet import recipe as wavenet_recipe

    monkeypatch.setattr(dcgan_recipe, "CLASSIFIER_STEPS", 5)
    monkeypatch.setattr(vae_recipe, "CLASSIFIER_STEPS", 5)
    monkeypatch.setattr(wavenet_recipe, "EVAL_SECONDS", 0.05)


@pytest.fixture
def cpu_kind(monkeypatch):
    """Set whether this CPU has bf16 matrix units (GENQ_CPU_BF16), the detection's cache cleared around it."""
    def set_kind(bf16_units: bool) -> None:
        monkeypatch.setenv("GENQ_CPU_BF16", "1" if bf16_units else "0")
        dev.cpu_bf16.cache_clear()

    yield set_kind
    dev.cpu_bf16.cache_clear()
