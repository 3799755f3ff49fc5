"""The decoding step's C++ kernel (decode_attention.cpp, the op torch.ops.genq.decode_attention): compiled on
first use by the machine's C++ compiler against the installed torch, kept in a cache folder named by its source,
torch's version and the flags, and loaded with torch.ops.load_library. Where it cannot be (no compiler, a CPU
without AVX2, GENQ_KERNELS=0), the step keeps torch's own functions, with a warning saying why.

Built once per machine (10-30 s); `genq kernels` (run by `make install`) builds it ahead of the first job.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("decode_attention.cpp")
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here; the message says why."""


def cache_folder() -> Path:
    """Where built kernels are kept: GENQ_KERNEL_CACHE, else $XDG_CACHE_HOME/genq/kernels (~/.cache/genq/kernels)."""
    if folder := os.environ.get("GENQ_KERNEL_CACHE"):
        return Path(folder)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genq" / "kernels"


def build() -> Path:
    """The built library, compiled now unless a build of the same source, torch and flags is in the cache."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        raise KernelUnavailable(f"this CPU has no AVX2 (torch reports {torch.backends.cpu.get_cpu_capability()})")
    if not SOURCE.is_file():
        raise KernelUnavailable(f"its source is not installed ({SOURCE})")
    compiler = os.environ.get("CXX") or "c++"
    torch_dir = Path(torch.__file__).parent
    key = hashlib.sha256(SOURCE.read_bytes() + f"{torch.__version__} {compiler} {FLAGS}".encode()).hexdigest()[:16]
    library = cache_folder() / key / "genq_kernels.so"
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    partial = library.with_name(f".{os.getpid()}.so")  # processes building at once each rename a whole file
    command = [compiler, *FLAGS, f"-I{torch_dir / 'include'}", str(SOURCE), "-o", str(partial),
               f"-L{torch_dir / 'lib'}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_dir / 'lib'}"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise KernelUnavailable(f"no C++ compiler '{compiler}' (set CXX)") from None
    except subprocess.CalledProcessError as exc:
        partial.unlink(missing_ok=True)
        raise KernelUnavailable(f"{compiler} failed: {exc.stderr.strip()[-500:]}") from None
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        raise KernelUnavailable(f"{compiler} took over 15 minutes") from None
    os.replace(partial, library)
    return library


@functools.cache
def decode_attention() -> bool:
    """Whether torch.ops.genq.decode_attention is loaded in this process (built first if need be)."""
    if os.environ.get("GENQ_KERNELS", "1") == "0":
        return False
    try:
        torch.ops.load_library(str(build()))
    except (KernelUnavailable, OSError, RuntimeError) as exc:
        warnings.warn(f"decoding with torch's attention functions: genq's kernel is unavailable ({exc})", stacklevel=2)
        return False
    return True


if __name__ == "__main__":  # `make install` and the Dockerfile build it ahead of the first job; never fails them
    try:
        print(f"genq's decoding kernel: {build()}")
    except KernelUnavailable as exc:
        print(f"genq's decoding kernel is unavailable, decoding uses torch's functions: {exc}")
