"""What this process can compute on. Touches CUDA only inside the worker process that will use it."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Callable

log = logging.getLogger("genq.worker")


def detect_devices() -> list[dict]:
    """The devices of this worker process: its GPU when CUDA_VISIBLE_DEVICES names one, else the CPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1"):
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            uuid = getattr(props, "uuid", None)  # what NVML knows the device by (CUDA and NVML number GPUs apart)
            return [{"kind": "cuda", "name": props.name, "memory_bytes": int(props.total_memory),
                     "visible_id": os.environ["CUDA_VISIBLE_DEVICES"], "uuid": f"GPU-{uuid}" if uuid else None}]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cores = os.cpu_count() or 1
    # threads: this slot's share of the cores (genq.worker.process), what each rank of a gang job computes on
    return [{"kind": "cpu", "name": platform.processor() or platform.machine(), "memory_bytes": int(memory),
             "cores": cores, "threads": int(os.environ.get("GENQ_TORCH_THREADS") or cores)}]


def gpu_ids() -> list[str]:
    """The GPUs nvidia-smi lists, without initialising CUDA in this process (children may fork from it)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def device_usage(devices: list[dict]) -> Callable[[], list[dict]] | None:
    """A function giving `devices` with their current utilisation (0..1) and memory in use, read through NVML;
    None without a CUDA device or without NVML: a CPU worker reports nothing rather than a made-up number."""
    uuids = [d.get("uuid") for d in devices if d["kind"] == "cuda"]
    if not uuids or None in uuids:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByUUID(uuid) for uuid in uuids]
    except Exception as exc:  # noqa: BLE001 - no driver library, an old driver: utilisation is optional
        log.info("no GPU utilisation in heartbeats: NVML is not available (%s)", exc)
        return None

    def sample() -> list[dict]:
        out = []
        for device, handle in zip(devices, handles):
            rates, memory = pynvml.nvmlDeviceGetUtilizationRates(handle), pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append({**device, "utilization": rates.gpu / 100, "memory_used_bytes": int(memory.used)})
        return out
    return sample
