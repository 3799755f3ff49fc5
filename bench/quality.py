"""Model quality through the platform's job path: `genq up`, submit over HTTP, read the job's metrics.

Not part of the test suite (minutes per model on a CPU). Prints, for each model, the number it is held to
next to its target (README.md's Quality table), and the wall time next to the reference time where there is
one; exits 1 naming the models that missed their target (a failed job misses it too).

    .venv/bin/python bench/quality.py --corpus PATH            # all models
    .venv/bin/python bench/quality.py vae wavenet              # some of them (no corpus needed)
    .venv/bin/python bench/quality.py vae --param max_steps=5  # a quick run, sure to miss its target

gpt and gru train on the whole tinyshakespeare.txt (1.1 MB): --corpus PATH or GENQ_BENCH_CORPUS=PATH. The
20k-character excerpt in tests/data is too small for the targets to mean anything.
GENQ_BENCH_HOME=DIR keeps the platform's data there (to look at the jobs' pages afterwards with `genq up`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genq.client import Client, wait_until_serving
from genq.jobs.service import parse_param_lines
from genq.redis_server import free_port

# name: (model, dataset, params, metric, target, better, reference seconds or None)
RUNS = {
    # nanoGPT's shakespeare_char CPU recipe: 1.88 validation loss after 2000 steps, about 3 minutes here.
    "gpt": ("gpt", "corpus", dict(tokenizer="char", n_layer=4, n_head=4, n_embd=128, block_size=64,
                                  batch_size=12, lr=1e-3, dropout=0.0, max_steps=2000, eval_interval=250,
                                  eval_iters=20), "val/loss", 1.88, "lower", 180.0),
    # The article's GRU at a CPU size (its 512-unit, batch-64 default takes ~0.4 s a step on two cores).
    "gru": ("gru", "corpus", dict(tokenizer="char", n_embd=128, hidden_size=256, batch_size=32, lr=3e-3,
                                  max_steps=1000), "val/loss", 2.0, "lower", 240.0),
    "dcgan": ("dcgan", "digits", dict(conditional="prompt"), "eval/class_accuracy", 0.90, "higher", None),
    "vae": ("vae", "digits", dict(), "eval/reconstruction_accuracy", 0.90, "higher", None),
    "wavenet": ("wavenet", "tones", dict(conditional=True), "eval/pitch_accuracy", 0.80, "higher", None),
}


def start_platform(home: Path, **settings: str) -> tuple[subprocess.Popen, Client]:
    """`genq up` in `home`, on its own Redis and SQLite unless `settings` name others (GENQ_REDIS_URL=...);
    the process and a client with its admin token."""
    port = free_port()
    env = {**os.environ, "GENQ_HOME": str(home), "GENQ_PORT": str(port)}
    env.pop("GENQ_REDIS_URL", None)
    env.pop("GENQ_DATABASE_URL", None)
    env.update(settings)
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "up.log", "wb")  # noqa: SIM115 - the platform's output, for when a run goes wrong
    # -P: the installed genq, not a folder named genq in the current directory (this repository's root)
    process = subprocess.Popen([sys.executable, "-P", "-m", "genq", "up"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    if wait_until_serving(url, process, timeout=300):
        return process, Client(url, (home / "admin-token").read_text().strip())
    process.kill()
    raise SystemExit(f"genq up did not start; see {home / 'up.log'}")


def platform_cpu(root: int) -> dict[str, float]:
    """CPU seconds used so far by `root` and each process under it (genq up: itself, the worker, the web, the
    scheduler, Redis), by name; empty where there is no /proc."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    procs: dict[int, tuple[int, str, float]] = {}  # pid: (parent, name, seconds)
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat, argv = (entry / "stat").read_text(), (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        words = [w.decode(errors="replace") for w in argv if w]
        name = stat[stat.index("(") + 1:stat.rindex(")")]  # the kernel's name: valkey-server, redis-server
        if "genq" in words:  # python -P -m genq worker ...: its command
            name = next((w for w in words[words.index("genq") + 1:] if not w.startswith("-")), "genq")
        procs[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / tick)
    under, out = {root}, {}
    for pid in sorted(procs):  # children have larger pids than their parents, bar wrap-around
        parent, name, seconds = procs[pid]
        if pid == root or parent in under:
            under.add(pid)
            out[name] = out.get(name, 0.0) + seconds
    return out


def succeeded(client: Client, job_id: int, timeout: float | None = None, say: bool = False) -> dict:
    """Job `job_id` once it has finished, followed as `genq wait` follows it (with `say`, each status printed);
    SystemExit unless it succeeded within `timeout` seconds (then it is cancelled)."""
    status = None
    try:
        for job in client.follow(job_id, None if timeout is None else time.monotonic() + timeout):
            if say and job["status"] != status:
                status = job["status"]
                print(f"  job {job_id}: {status}", flush=True)
    except TimeoutError:
        client.cancel(job_id)
        raise SystemExit(f"job {job_id} did not finish in {timeout:.0f} s (cancelled)") from None
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job_id} {job['status']}: {job['error']}")
    return job


def wait_until_settled(client: Client, timeout: float = 120.0) -> None:
    """Wait until a worker is online and the machine's CPUs are mostly idle again (the platform's processes
    have finished starting): a job timed on a platform still booting would share the cores with its start,
    which a user's platform, already up, does not make its jobs pay."""
    deadline = time.monotonic() + timeout
    while not client.request("GET", "/workers")["workers"] and time.monotonic() < deadline:
        time.sleep(0.5)
    while time.monotonic() < deadline and cpu_busy(1.0) > 0.25:
        pass


def _cpu_times() -> list[int]:
    """The machine's CPU time so far by state, in clock ticks (Linux /proc/stat: user, nice, system, idle,
    iowait, irq, softirq, steal, ...); empty elsewhere."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return []


def cpu_busy(seconds: float) -> float:
    """The share of the machine's CPU time spent busy over the next `seconds` (Linux /proc/stat; 0 elsewhere)."""
    def sample() -> tuple[int, int]:
        fields = _cpu_times()
        return (sum(fields), fields[3] + fields[4]) if fields else (0, 0)  # all, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def stolen_seconds() -> float:
    """CPU seconds the hypervisor has so far given to other guests while this machine's CPUs had work (steal
    time, all CPUs together; 0 where /proc/stat has none): the drift a virtual machine's timings carry."""
    fields = _cpu_times()
    return fields[7] / os.sysconf("SC_CLK_TCK") if len(fields) > 7 else 0.0


def meets(value: float, target: float, better: str) -> bool:
    """Whether `value` reaches `target`, where `better` is "lower" or "higher"."""
    return value <= target if better == "lower" else value >= target


def run(client: Client, name: str, corpus_id: int, extra: dict) -> str | None:
    """Train model `name` through the job path and print its line; why it missed its target, or None."""
    model, dataset, params, metric, target, better, reference = RUNS[name]
    start = time.monotonic()
    job_id = client.submit({"type": "train", "model": model, "params": {**params, **extra},
                            "dataset": corpus_id if dataset == "corpus" else dataset})["id"]
    job = client.wait(job_id)
    wall = time.monotonic() - start
    if job["status"] != "succeeded":
        print(f"{name:8} job {job_id} {job['status']}: {job['error']}")
        return f"job {job_id} {job['status']}"
    series = client.metrics(job_id, points=10_000)
    if not series.get(metric):
        print(f"{name:8} job {job_id} reported no {metric}")
        return f"no {metric}"
    value = series[metric][-1][1]
    ok = meets(value, target, better)
    goal = f"{'<=' if better == 'lower' else '>='} {target}"
    timing = f"{wall:6.0f} s" + (f" ({wall / reference:.2f}x the {reference:.0f} s reference)" if reference else "")
    extra_metrics = ", ".join(f"{k}={v[-1][1]:.3g}" for k, v in sorted(series.items())
                              if k.startswith("eval/") and k != metric)
    print(f"{name:8} job {job_id}: {metric} = {value:.4f} (target {goal}) {'PASS' if ok else 'MISS'}; "
          f"wall {timing}; {extra_metrics}", flush=True)
    return None if ok else f"{metric} = {value:.4f}, target {goal}"


def report(missed: dict[str, str]) -> int:
    """Print which models missed their target; the exit status (1 if any did)."""
    if missed:
        print("missed: " + "; ".join(f"{name} ({why})" for name, why in missed.items()), flush=True)
        return 1
    print("every model met its target", flush=True)
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", metavar="MODEL", help=f"some of {', '.join(RUNS)} (default: all)")
    ap.add_argument("--corpus", default=os.environ.get("GENQ_BENCH_CORPUS"),
                    help="tinyshakespeare.txt, for gpt and gru (default: $GENQ_BENCH_CORPUS)")
    ap.add_argument("--param", action="append", default=[], help="KEY=VALUE (JSON value) for every model")
    args = ap.parse_args(argv)
    names = args.models or list(RUNS)
    if unknown := [n for n in names if n not in RUNS]:
        ap.error(f"no model {', '.join(unknown)}: the models are {', '.join(RUNS)}")
    extra = parse_param_lines("\n".join(args.param))  # the CLI's KEY=VALUE reading
    corpus = None
    if {"gpt", "gru"} & set(names):
        # checked before the platform starts: a missing corpus would otherwise surface minutes in
        if not args.corpus:
            ap.error("gpt and gru need tinyshakespeare.txt: pass --corpus PATH or set GENQ_BENCH_CORPUS")
        corpus = Path(args.corpus)
        if not corpus.is_file():
            ap.error(f"the corpus {corpus} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(os.environ.get("GENQ_BENCH_HOME") or tmp)
        process, client = start_platform(home)
        missed = {}
        try:
            corpus_id = client.upload(corpus)["id"] if corpus else 0
            for name in names:
                why = run(client, name, corpus_id, extra)
                if why:
                    missed[name] = why
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(120)
    return report(missed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
