"""bench/gpu_check.sh stays runnable before a GPU runs it: its CPU smoke run goes through every step (bare
loop, a job through `genq up`, generation from the job's checkpoint) and reports no MFU without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_without_nvidia_smi_the_script_says_it_needs_a_gpu(tmp_path):
    (tmp_path / "bin").mkdir()
    for tool in ("dirname", "env", "bash"):  # a PATH with what the script's first lines need, and no nvidia-smi
        (tmp_path / "bin" / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True,
                          env={"PATH": str(tmp_path / "bin")}, timeout=60)
    assert done.returncode == 2 and "needs an NVIDIA GPU" in done.stderr


@pytest.mark.slow  # starts the platform and trains a tiny model: about half a minute
def test_the_cpu_smoke_run_measures_every_step(tmp_path):
    out = tmp_path / "check.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENQ_")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu-smoke", "--seconds", "1",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [name.split(" (")[0].split(",")[0] for name in rows] == ["bare loop", "genq job", "batch generation",
                                                                   "sample.generate"]
    assert all(r["tokens_per_s"] > 0 for r in rows.values())
    job = next(r for name, r in rows.items() if name.startswith("genq job"))
    assert job["mfu"] is None and report["info"]["peak_flops"] is None  # a CPU: no peak, no MFU
    assert job["peak_bytes"] > 0 and job["estimate_bytes"] > 0 and "(cpu)" in job["worker"]
    assert "tokens/s" in done.stdout and "n/a" in done.stdout


def test_the_model_kinds_check_runs_and_names_what_fails():
    """bench/gpu_models.py, which gpu_check.sh runs after gpu_check.py, on the CPU: each kind trains, stops,
    resumes and generates; an unknown kind is reported as failed and the script exits 1."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_models.py"), "--device", "cpu",
                           "--kinds", "gpt,vae,nope"], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ok    gpt" in done.stdout and "80 rows identical at batch sizes 1, 7, 32" in done.stdout
    assert "ok    vae" in done.stdout and "2 of 3 model kinds passed; failed: ['nope']" in done.stdout
