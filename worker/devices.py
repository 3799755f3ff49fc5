"""What this process can compute on. Touches CUDA only inside the worker process that will use it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess


def detect_devices() -> list[dict]:
    """The devices of this worker process: its GPU when CUDA_VISIBLE_DEVICES names one, else the CPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1"):
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return [{"kind": "cuda", "name": props.name, "memory_bytes": int(props.total_memory),
                     "visible_id": os.environ["CUDA_VISIBLE_DEVICES"]}]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return [{"kind": "cpu", "name": platform.processor() or platform.machine(), "memory_bytes": int(memory),
             "cores": os.cpu_count() or 1}]


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
