"""A worker process without a usable GPU computes on the CPU and reports no GPU utilisation."""

from __future__ import annotations

import pytest
import torch

from genq.worker import devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: a worker named one would use it")
@pytest.mark.parametrize("visible", ["", "-1", "0"])  # "0": a GPU named, but CUDA finds none (no driver here)
def test_a_worker_without_cuda_detects_the_cpu(visible, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.delenv("GENQ_TORCH_THREADS", raising=False)
    found = devices.detect_devices()
    assert [d["kind"] for d in found] == ["cpu"]
    assert found[0]["memory_bytes"] > 0 and found[0]["cores"] >= 1
    assert found[0]["threads"] == found[0]["cores"], "a worker of one slot computes on every core"
    monkeypatch.setenv("GENQ_TORCH_THREADS", "1")  # one slot of several (genq.worker.process.worker_children)
    assert devices.detect_devices()[0]["threads"] == 1
    assert devices.device_usage(found) is None  # no made-up utilisation for a CPU
