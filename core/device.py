"""What training and generation need to know about their device: bf16 autocast (GPUs, CPUs with bf16
instructions), fused AdamW, pinned copies to a GPU, the GPU's peak bf16 throughput (for MFU), and the peak
memory a job used.

Every choice here is made from the device string ("cpu", "cuda", "cuda:1"), so the CUDA paths can be tested
for their selection on a machine without a GPU.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache

import torch

# Dense bf16 tensor-core FLOP/s with fp32 accumulation, from the vendor's datasheets (the sparse figures are
# twice these). Matched in order against torch.cuda.get_device_name(); the first match wins.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    (r"H[12]00 NVL", 835e12),
    (r"H100 PCIe", 756e12),
    (r"H[12]00", 989e12),  # SXM, and GH200
    (r"A100", 312e12),
    (r"\bA10\b", 125e12),
    (r"L40S", 362e12),
    (r"\bL40\b", 181e12),
    (r"\bL4\b", 121e12),
    (r"RTX 4090", 165e12),
    (r"RTX 3090", 71e12),
)


def is_cuda(device: str) -> bool:
    """Whether `device` names a CUDA GPU."""
    return torch.device(device).type == "cuda"


def prepare(device: str) -> None:
    """Process settings for work on `device`: TF32 for the float32 matrix products left outside autocast on a
    GPU (nanoGPT's setting; strict float32 runs them at a fraction of the tensor cores' rate)."""
    if is_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@cache
def cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: Intel's AMX tiles (a 2048^3 bf16 product at about
    3-4x float32's rate) or AVX-512 BF16 (AMD Zen 4 on, Intel Cooper Lake: 2-3x); other CPUs emulate bf16,
    slower than float32. GENQ_CPU_BF16=0 or 1 overrides the detection."""
    if (forced := os.environ.get("GENQ_CPU_BF16", "")) in ("0", "1"):
        return forced == "1"
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))


# Narrower matrices compute in float32 on a CPU even with bf16 units: a training step of 1 layer of 32 took 2.2x
# as long under bf16 autocast on AMX, 2 layers of 64 1.3x as long (the casts cost more than the products save),
# 4 of 128 0.67x as long (0.5-0.75x with AVX-512 BF16 on an AMD EPYC).
CPU_BF16_MIN_WIDTH = 128


def matmul_dtype(device: str, width: int) -> torch.dtype:
    """The dtype products of matrices at least `width` wide run fastest in on `device`: bf16 on a GPU, and on a
    CPU with bf16 units (cpu_bf16) from CPU_BF16_MIN_WIDTH on; float32 elsewhere."""
    if is_cuda(device):
        return torch.bfloat16
    bf16_units = torch.device(device).type == "cpu" and cpu_bf16()
    return torch.bfloat16 if bf16_units and width >= CPU_BF16_MIN_WIDTH else torch.float32


def autocast(device: str, width: int = 0) -> AbstractContextManager:
    """bf16 autocast where bf16 matrix products are the fast ones (matmul_dtype): on a GPU, and on a CPU with
    bf16 units for a model `width` wide or wider; decoding passes no width (a token per row: products too small
    to repay the casts)."""
    if matmul_dtype(device, width) == torch.float32:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@contextmanager
def one_thread(when: bool) -> Iterator[None]:
    """One torch thread inside (when `when`), the caller's number again after: on a CPU, kernels too small to
    split run faster alone than with the slot's other threads woken for each (they sleep between regions)."""
    threads = torch.get_num_threads()
    if when and threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fused_adamw(device: str) -> bool | None:
    """`fused=` for torch.optim.AdamW: True where torch has the fused kernel (CPU, CUDA), else None (default)."""
    return True if torch.device(device).type in ("cpu", "cuda") else None


def pins(device: str) -> bool:
    """Whether copies to `device` go through pinned memory: only a GPU reads it without a host-side copy."""
    return is_cuda(device)


def to_device(t: torch.Tensor, device: str) -> torch.Tensor:
    """`t` on `device`. To a GPU through pinned memory and without waiting: a non_blocking copy from pageable
    memory is synchronous, and the host would stall at every batch."""
    if pins(device):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def peak_flops_of(name: str) -> float | None:
    """The dense bf16 FLOP/s of the GPU called `name`, or None for one not in PEAK_BF16_FLOPS."""
    for pattern, flops in PEAK_BF16_FLOPS:
        if re.search(pattern, name, re.IGNORECASE):
            return flops
    return None


def peak_flops(device: str) -> float | None:
    """The peak bf16 FLOP/s of `device`; None on a CPU or an unknown GPU (no MFU rather than a guess)."""
    return peak_flops_of(torch.cuda.get_device_name(torch.device(device))) if is_cuda(device) else None


def _proc_status_bytes(field: str) -> int | None:
    """A "kB" line of /proc/self/status (VmRSS, VmHWM) in bytes; None where there is no such file."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (2.33+): the C heap's counters, in bytes."""
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


# Free heap below this is left resident: malloc_trim walks the whole heap (2.3 ms of each tiny generation job in
# bench/dispatch.py's stream, 4.5% of the worker's time), and a job's peak is then overstated by less than this.
TRIM_FREE_ABOVE = 64 * 1024 * 1024


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim  # noqa: B018 - glibc's, or AttributeError
    except (OSError, AttributeError):  # not glibc
        return None
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    return libc


def _release_free_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim), where there is such a call and more
    than TRIM_FREE_ABOVE is free: an earlier job's freed memory would otherwise stay resident, and a job reusing
    it would not count it."""
    libc = _libc()
    if libc is None:
        return
    if hasattr(libc, "mallinfo2") and libc.mallinfo2().fordblks < TRIM_FREE_ABOVE:
        return
    libc.malloc_trim(0)


# glibc's malloc hands a freed block above its mmap threshold (128 KB at first, raised as such blocks are freed) back
# to the kernel at once, and the heap's free top beyond its trim threshold: the next forward's activations then
# fault in again page by page (~3 us a 4 KB page on a 2-core EPYC). With both fixed high, a 300-step gpt job on
# the CPU took 17,000 minor faults instead of 22,000-53,000, and its time besides the steps (evaluations, samples,
# checkpoints) 0.53 s instead of 0.69 s (medians of six, alternating with a platform without the setting: see
# docs/speed.md). Blocks above 32 MB (glibc's ceiling) are still mapped apart.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)


def keep_freed_heap() -> None:
    """Have the C heap keep freed memory for reuse rather than return it to the kernel at once (glibc's
    mallopt; nothing elsewhere): for a long-lived process, a worker, that allocates the same tensors again."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


# A thread working beside training (the checkpoint writer) takes a core from training's own threads on a machine
# with none to spare, and each of training's parallel regions then waits for the thread that lost its core: on a
# 2-core EPYC, copying the weights after a checkpoint's snapshot took 34-59 ms instead of 0.3 (about 8 ms a copy)
# while the writer ran. At the lowest priority the writer runs when training leaves a core idle.
BACKGROUND_NICE = 19


def background_thread() -> None:
    """Give the calling thread the lowest CPU priority (Linux: this thread alone; nothing elsewhere): for work
    beside training that holds no lock another process waits for, so it may wait for an idle core."""
    if sys.platform == "linux":  # where setpriority takes a thread id; elsewhere it would renice the process
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        except OSError:  # not permitted here: the thread runs as before
            pass


class PeakMemory:
    """The most memory one job used, from its start: on a GPU the tensors PyTorch's allocator held at once
    (torch.cuda.max_memory_allocated; the CUDA context's few hundred MB are not in it); on a CPU how far the
    process' resident set rose above where it stood at the start (Linux: the kernel's high-water mark VmHWM,
    reset through /proc/self/clear_refs so an earlier job's peak does not count; memory the process already
    held, such as the interpreter and torch, is not the job's). None where neither is available (a CPU
    without /proc, or one that refuses the reset)."""

    def __init__(self, device: str):
        self.device = device
        self.base: int | None = None
        if is_cuda(device):
            torch.cuda.reset_peak_memory_stats(torch.device(device))
            return
        _release_free_heap()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak resident set size to the current one (Linux 4.0+)
        except OSError:
            return
        self.base = _proc_status_bytes("VmRSS")

    def bytes(self) -> int | None:
        """The peak so far (bytes), or None where it cannot be measured."""
        if is_cuda(self.device):
            return int(torch.cuda.max_memory_allocated(torch.device(self.device)))
        peak = _proc_status_bytes("VmHWM") if self.base is not None else None
        return None if peak is None else max(0, peak - self.base)
