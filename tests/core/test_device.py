"""The device choices (autocast, fused AdamW, pinned copies, MFU's peak) select correctly without a GPU, and
every CPU job records its peak memory and no MFU."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from contextlib import nullcontext

import pytest
import torch

from genq.core import api
from genq.core import device as dev
from genq.core import train as loop
from genq.core.data.text import TextData
from genq.core.models.gpt.net import GPT, GPTConfig

GPT_PARAMS = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 8, "max_steps": 20,
              "eval_interval": 20, "eval_iters": 1, "checkpoint_interval": 1000, "warmup_steps": 2}


def test_autocast_is_bf16_on_a_gpu(cpu_kind):
    cpu_kind(False)
    with pytest.warns(UserWarning, match="CUDA is not available"):  # built here, it turns itself off
        on_gpu = dev.autocast("cuda:0")
    assert isinstance(on_gpu, torch.autocast) and on_gpu.device == "cuda" and on_gpu.fast_dtype == torch.bfloat16


def test_autocast_on_a_cpu_is_bf16_only_with_bf16_units_for_wide_models(cpu_kind):
    cpu_kind(False)
    assert isinstance(dev.autocast("cpu", 768), nullcontext) and dev.matmul_dtype("cpu", 768) == torch.float32
    cpu_kind(True)
    wide = dev.autocast("cpu", dev.CPU_BF16_MIN_WIDTH)
    assert isinstance(wide, torch.autocast) and wide.device == "cpu" and wide.fast_dtype == torch.bfloat16
    assert isinstance(dev.autocast("cpu", dev.CPU_BF16_MIN_WIDTH - 1), nullcontext)  # narrow: the casts cost more
    assert isinstance(dev.autocast("cpu"), nullcontext)  # decoding passes no width
    assert dev.matmul_dtype("cuda", 16) == torch.bfloat16


@pytest.mark.parametrize("flags, bf16_units", [
    ({"amx_bf16": True, "avx512_bf16": True}, True),  # Intel Sapphire Rapids on
    ({"amx_bf16": False, "avx512_bf16": True}, True),  # AMD Zen 4 on, Intel Cooper Lake
    ({"amx_bf16": False, "avx512_bf16": False, "avx2": True}, False),  # bf16 emulated: float32 is faster
])
def test_cpu_bf16_follows_the_cpus_bf16_flags(monkeypatch, flags, bf16_units):
    monkeypatch.delenv("GENQ_CPU_BF16", raising=False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    dev.cpu_bf16.cache_clear()
    try:
        assert dev.cpu_bf16() is bf16_units
        monkeypatch.setenv("GENQ_CPU_BF16", "0" if bf16_units else "1")  # the override wins
        dev.cpu_bf16.cache_clear()
        assert dev.cpu_bf16() is not bf16_units
    finally:
        dev.cpu_bf16.cache_clear()


def test_fused_adamw_only_where_torch_has_the_kernel():
    assert dev.fused_adamw("cpu") is True and dev.fused_adamw("cuda") is True and dev.fused_adamw("cuda:1") is True
    assert dev.fused_adamw("mps") is None and dev.fused_adamw("meta") is None
    net = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    assert net.optimizer(1e-3, 0.1, device="cpu").defaults["fused"] is True
    assert net.optimizer(1e-3, 0.1, device="mps").defaults["fused"] is None


def test_batches_are_pinned_only_for_a_gpu():
    assert dev.pins("cuda") and dev.pins("cuda:3")
    assert not dev.pins("cpu") and not dev.pins("mps")
    ds = TextData(list(range(50)) * 10, block_size=8, batch_size=4, seed=0, device="cpu")
    x, y = ds.get_batch()
    assert x.shape == y.shape == (4, 8) and torch.equal(x[:, 1:], y[:, :-1])
    assert not x.is_pinned() and x.device.type == "cpu"


@pytest.mark.parametrize(("name", "flops"), [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12), ("NVIDIA GH200 480GB", 989e12),
    ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200 NVL", 835e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100-PCIE-40GB", 312e12), ("NVIDIA A10", 125e12),
    ("NVIDIA L4", 121e12), ("NVIDIA L40", 181e12), ("NVIDIA L40S", 362e12),
    ("NVIDIA GeForce RTX 4090", 165e12), ("NVIDIA GeForce RTX 3090", 71e12),
    ("Tesla T4", None), ("NVIDIA GeForce GTX 1080", None), ("NVIDIA RTX A6000", None),
])
def test_peak_flops_by_device_name(name, flops):
    assert dev.peak_flops_of(name) == flops


def test_no_peak_flops_on_a_cpu():
    assert dev.peak_flops("cpu") is None


def test_flops_per_token_at_gpt2_small_shape():
    with torch.device("meta"):  # the arithmetic needs no weights
        net = GPT(GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768))
    # 12 layers of 12 d^2 matrices, the tied embedding once, LayerNorm gains (two per block, the final one,
    # each block's per-head QK-norm): 123.6M, nanoGPT's GPT-2 small without its position table
    n = 12 * 12 * 768**2 + 50304 * 768 + 12 * (2 * 768 + 64) + 768
    assert net.num_params() == n == 123_588_096
    assert net.flops_per_token() == 6 * n + 12 * 12 * 768 * 1024


def test_the_loop_logs_mfu_only_with_a_peak_and_peak_memory_when_given(make_hooks):
    def run(**kw):
        hooks = make_hooks()
        loop.run(lambda s: {"loss": 1.0}, hooks, max_steps=20, save_fn=lambda s: None, checkpoint_interval=1000,
                 items_per_step=100, **kw)
        return hooks.series

    with_peak = run(flops_per_item=1e6, peak_flops=1e12, peak_memory=lambda: 1234)
    for (s1, rate), (s2, mfu) in zip(with_peak["throughput/tokens_per_s"], with_peak["throughput/mfu"]):
        assert s1 == s2 and mfu == pytest.approx(rate * 1e6 / 1e12)
    assert with_peak["memory/peak_bytes"] == [(10, 1234), (20, 1234)]
    without = run(flops_per_item=1e6, peak_flops=None, peak_memory=lambda: None)
    assert "throughput/tokens_per_s" in without and "throughput/mfu" not in without
    assert "memory/peak_bytes" not in without


@pytest.mark.skipif(dev._proc_status_bytes("VmRSS") is None, reason="no /proc/self/status (not Linux)")
def test_cpu_peak_memory_counts_this_job_only():
    # Both tensors are larger than glibc's largest mmap threshold (32 MiB): fresh pages, not reused heap
    # memory that earlier tests freed (a job reusing memory its process already holds does not raise the RSS).
    first = dev.PeakMemory("cpu")
    big = torch.ones(32 * 2**20)  # 128 MiB, written
    assert first.bytes() >= 120 * 2**20
    del big
    second = dev.PeakMemory("cpu")  # a later job: the first one's peak is not its own
    smaller = torch.ones(12 * 2**20)  # 48 MiB
    assert 44 * 2**20 <= second.bytes() < 100 * 2**20
    del smaller


@pytest.mark.skipif(dev._proc_status_bytes("VmRSS") is None, reason="no /proc/self/status (not Linux)")
def test_a_cpu_training_and_generation_job_record_peak_memory_and_no_mfu(text_file, tmp_path, make_hooks):
    hooks = make_hooks()
    api.train("gpt", GPT_PARAMS, text_file, tmp_path / "job", hooks)
    peaks = hooks.series["memory/peak_bytes"]
    assert [s for s, _ in peaks] == [10, 20, 20]  # each log step, and once more at the end
    assert all(v > 0 for _, v in peaks) and peaks[-1][1] >= peaks[-2][1]
    assert "throughput/mfu" not in hooks.series and hooks.series["throughput/tokens_per_s"]

    gen = make_hooks()
    api.generate(tmp_path / "job", [None], {"num_samples": 2, "max_new_tokens": 10, "seed": 1}, tmp_path / "out",
                 gen)
    # a generation this small may fit in memory the process already holds: present, perhaps 0
    assert [s for s, _ in gen.series["memory/peak_bytes"]] == [0] and gen.series["memory/peak_bytes"][0][1] >= 0


def own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's")
def test_checkpoints_are_written_at_the_lowest_priority_and_training_keeps_its_own(text_file, tmp_path, make_hooks):
    """The checkpoint writer yields its core to training's threads (genq.core.device.background_thread)."""
    class Hooks(make_hooks):
        def checkpoint_written(self, step, path):  # in the writer's thread
            self.writer_priority = own_priority()

    training = own_priority()
    hooks = Hooks()
    api.train("gpt", GPT_PARAMS, text_file, tmp_path / "job", hooks)
    assert hooks.writer_priority == dev.BACKGROUND_NICE > training == own_priority()


def test_tf32_is_turned_on_for_a_gpu_only():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32  # process-wide flags: put back afterwards
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        dev.prepare("cpu")
        assert not matmul.allow_tf32 and not cudnn.allow_tf32
        dev.prepare("cuda:0")  # no GPU needed: it only sets the flags
        assert matmul.allow_tf32 and cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def test_text_models_autocast_only_where_the_model_asks_for_it(cpu_kind):
    from genq.core.models.gpt.recipe import GPTRecipe
    from genq.core.models.gru.recipe import GRURecipe

    cpu_kind(True)
    assert isinstance(GPTRecipe.amp("cpu", 128), torch.autocast) and isinstance(GRURecipe.amp("cpu", 128), nullcontext)
    assert isinstance(GPTRecipe.amp("cpu"), nullcontext)
    assert isinstance(GRURecipe.amp("cuda"), nullcontext)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        amp = GPTRecipe.amp("cuda")
    assert isinstance(amp, torch.autocast) and amp.fast_dtype == torch.bfloat16


def test_muon_and_adamw_select_their_kernels_by_device():
    from genq.core import optim

    net = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    for device, fused in (("cpu", True), ("cuda:0", True), ("mps", None)):
        opts = optim.muon_with_adamw(net, net.h, 1e-3, 0.1, (0.9, 0.99), device)
        assert opts["optimizer"].defaults["fused"] is fused
        assert opts["muon"].defaults["adjust_lr_fn"] == "match_rms_adamw"


def test_the_heap_is_trimmed_only_when_much_of_it_is_free(monkeypatch):
    # malloc_trim walks the whole heap: a stream of tiny jobs paid it at each start for a few free KB
    trims = []

    class Libc:
        free = 0

        def mallinfo2(self):
            return dev._MallInfo2(fordblks=self.free)

        def malloc_trim(self, pad):
            trims.append(pad)

    libc = Libc()
    monkeypatch.setattr(dev, "_libc", lambda: libc)
    libc.free = dev.TRIM_FREE_ABOVE - 1
    dev._release_free_heap()
    assert trims == []
    libc.free = dev.TRIM_FREE_ABOVE
    dev._release_free_heap()
    assert trims == [0]


@pytest.mark.skipif(dev._libc() is None or not hasattr(dev._libc(), "mallinfo2"), reason="glibc 2.33+ only")
@pytest.mark.parametrize("kept", [False, True])
def test_a_worker_keeps_freed_blocks_in_its_heap(kept):
    # In a process of its own: the setting is the whole process'. An 8 MB block is mapped apart by default (and
    # unmapped when freed); once a worker keeps its freed heap, it comes from the heap.
    script = ("import ctypes; from genq.core import device as dev; libc = dev._libc()\n"
              f"if {kept}: dev.keep_freed_heap()\n"
              "libc.malloc.restype = ctypes.c_void_p; before = libc.mallinfo2().hblks\n"
              "block = libc.malloc(8 << 20); print(libc.mallinfo2().hblks - before)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert int(out) == (0 if kept else 1)
