#!/usr/bin/env bash
# genq on an NVIDIA GPU in one command: training tokens/s and MFU of a GPT-2-small-shaped model in a bare loop
# and as a genq job, and batch-generation tokens/s (bench/gpu_check.py says how); then every model kind trained,
# stopped, resumed and sampled on the GPU (bench/gpu_models.py). Under 6 minutes once installed. Options go to
# gpu_check.py: --cpu-smoke (a tiny shape on the CPU: checks this script), --no-compile, --seconds N,
# --batch-size B, --json PATH.
#
# The Python it runs, the first that fits:
#   $GENQ_PYTHON                          an interpreter with genq installed, used as it is
#   .venv-gpu/bin/python                  what an earlier run of this script built
#   .venv/bin/python                      `make install`'s, if its torch sees the GPU (any torch for --cpu-smoke)
#   a venv layered over $GENQ_BASE_PYTHON (default python3) when that one's torch sees the GPU: genq and its
#       other dependencies go into .venv-gpu, torch is the base's (no multi-GB download). Without internet,
#       GENQ_WHEELS=DIR names a folder of wheels of the dependencies the base lacks, installed as they are (no
#       resolving: fetch each with `pip download --no-deps --only-binary=:all:` for the base's Python and
#       platform), and genq is built with the base's setuptools. README's GPU section lists what an H200 lacked.
#   else `make install` (PyPI's torch, a CUDA build) and .venv/bin/python.
set -euo pipefail
shopt -s inherit_errexit  # a failed install inside $(pick_python) stops the script
cd "$(dirname "$0")/.."

smoke=0
for arg in "$@"; do
    if [[ "$arg" == --cpu-smoke ]]; then smoke=1; fi
done

if [[ $smoke == 0 ]]; then
    if ! command -v nvidia-smi >/dev/null; then
        echo "gpu_check: no nvidia-smi here; this check needs an NVIDIA GPU (--cpu-smoke runs it on the CPU)" >&2
        exit 2
    fi
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
fi

# torch_ok PYTHON: the interpreter imports torch, and torch sees a GPU unless this is the CPU smoke run
torch_ok() {
    "$1" -c "import sys, torch; sys.exit(0 if $smoke or torch.cuda.is_available() else 1)" 2>/dev/null
}
genq_ok() {
    torch_ok "$1" && "$1" -c "import genq.core.device, genq.client" 2>/dev/null
}

# layer_venv BASE: .venv-gpu sees BASE's packages (torch, and pip itself) through a .pth file; genq goes in it.
# Without pip or setuptools of its own, so none shadows the base's.
layer_venv() {
    local base=$1 inner
    rm -rf .venv-gpu
    "$base" -m venv --without-pip .venv-gpu
    inner=$(.venv-gpu/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$base" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' \
        | sort -u > "$inner/genq_base_packages.pth"
    local pip=(.venv-gpu/bin/python -m pip install --quiet)
    if [[ -n "${GENQ_WHEELS:-}" ]]; then
        "${pip[@]}" --no-index --no-deps "$GENQ_WHEELS"/*.whl
        "${pip[@]}" --no-index --no-deps --no-build-isolation -e .
    else
        "${pip[@]}" -e .
    fi
}

pick_python() {  # prints the interpreter to run; what it installs says so on stderr
    if [[ -n "${GENQ_PYTHON:-}" ]]; then echo "$GENQ_PYTHON"; return; fi
    if [[ -z "${GENQ_BASE_PYTHON:-}" ]]; then
        for candidate in .venv-gpu/bin/python .venv/bin/python; do
            if genq_ok "$candidate"; then echo "$candidate"; return; fi
        done
    fi
    local base=${GENQ_BASE_PYTHON:-python3}
    if torch_ok "$base"; then
        echo "gpu_check: installing genq in .venv-gpu over the torch of $base" >&2
        layer_venv "$base" >&2
        echo .venv-gpu/bin/python
    else
        echo "gpu_check: make install (PyPI's torch)" >&2
        make install >&2
        echo .venv/bin/python
    fi
}

py=$(pick_python)
genq_ok "$py" || { echo "gpu_check: $py has no genq, or its torch sees no GPU" >&2; exit 2; }

export PYTHONUNBUFFERED=1
status=0
"$py" bench/gpu_check.py "$@" || status=$?
device=cuda
if [[ $smoke == 1 ]]; then device=cpu; fi
"$py" bench/gpu_models.py --device $device || status=$?
exit $status
