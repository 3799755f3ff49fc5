"""Training speed on this machine's CPU (a script, not a test): genq's `gpt` step against transformers'
GPT2LMHeadModel, and a genq job through the platform against the bare loop.

    .venv/bin/python bench/train.py --corpus PATH [--threads N] [--rounds N] [--no-job] [--shapes small,large]
                                                [--compile]

1. Bare-loop tokens/s at two shapes, side by side: genq's GPTRecipe.step (its data pipeline, forward,
   backward, clipping at 1.0, fused AdamW) against GPT2LMHeadModel built from a GPT2Config (random weights,
   nothing downloaded) trained by the same AdamW, the same clipping and the same batches. Both models run in
   one process, in alternating rounds of a few steps, so a burst of other work on a shared machine slows both;
   the figure is the median over rounds. Shapes: nanoGPT's shakespeare_char CPU shape (4 layers, 4 heads,
   128 wide, block 64, batch 12, 65 tokens; goal >= 1.3x) and a larger one (6, 6, 384, block 256, batch 16;
   goal >= 1.2x). Achieved GFLOP/s (6 x matrix parameters + attention, nanoGPT's estimate, the same count for
   both) stand next to a 2048x2048 float32 matrix product timed in the same rounds. On a CPU with bf16 units
   (AMX, AVX-512 BF16), where genq trains under bf16 autocast (genq.core.device.autocast), transformers runs
   twice, in float32 and under the same autocast, a bf16 matrix product is timed too, and the goal is judged
   against the faster peer.
   With --compile, genq's step under torch.compile (compile=true) races too: its steady state, and apart the
   seconds its first two steps took (the compiling), which a job pays.
2. The 300-step nanoGPT CPU recipe (checkpoint every 100) as a genq job through `genq up` and the HTTP API,
   from the job's started_at to its finished_at (data load, evaluations, checkpoints, final evaluation and
   samples included; submitted once the platform has settled), against the same recipe's steps in a bare
   loop here, with the platform up and idle: --job-rounds of each in turn, a bare loop first and last, and the
   ratio of the medians (goal: bare / job >= 0.95); and each job's time split into its steps (by its own
   throughput metric) and the rest; on Linux, the CPU seconds of each bare loop and, over each job, of each of
   the platform's processes (the job's worker against the bare loop; the web, the scheduler and Redis beside
   it, their cost to the job's cores). This machine's speed drifts by 20% within minutes: one job against one
   loop measured anywhere from 0.73x to 1.02x in four runs of the same code.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from genq.worker.process import SPIN_COUNT  # noqa: E402 - imports no torch

# The worker's OpenMP setting (genq.worker.process.worker_children), before torch starts its threads: the
# in-process runs compared with a job spin as long as the job's threads before they sleep.
os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from quality import platform_cpu, start_platform, stolen_seconds, succeeded, wait_until_settled  # noqa: E402

from genq.core import api, optim  # noqa: E402
from genq.core import device as dev  # noqa: E402
from genq.core.models.gpt.recipe import GPTRecipe  # noqa: E402
from genq.core.spec import get as get_spec  # noqa: E402

# name: (n_layer, n_head, n_embd, block_size, batch_size, goal)
SHAPES = {"small": (4, 4, 128, 64, 12, 1.3), "large": (6, 6, 384, 256, 16, 1.2)}
VOCAB = 65  # tinyshakespeare's characters
# nanoGPT's config/train_shakespeare_char.py with its CPU overrides, cut to 300 steps
JOB_PARAMS = {"tokenizer": "char", "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12,
              "lr": 1e-3, "dropout": 0.0, "max_steps": 300, "checkpoint_interval": 100, "eval_interval": 250,
              "eval_iters": 20, "warmup_steps": 100, "min_lr": 1e-4, "weight_decay": 0.1, "grad_clip": 1.0}


def flops_per_token(n_layer: int, n_embd: int, block_size: int, vocab: int) -> float:
    """Training FLOPs per token of a GPT of this shape: 6 x (block matrices + tied head) + attention."""
    return 6 * (12 * n_layer * n_embd ** 2 + vocab * n_embd) + 12 * n_layer * n_embd * block_size


def synthetic_corpus(folder: Path) -> Path:
    """A text of 200k characters drawn from 65 distinct ones (seeded): the char tokenizer gives VOCAB tokens."""
    alphabet = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    assert len(alphabet) == VOCAB
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(VOCAB, (200_000,), generator=gen).tolist()
    path = folder / "corpus.txt"
    path.write_text("".join(alphabet[i] for i in ids))
    return path


class QuietHooks(api.Hooks):
    """Hooks that keep nothing: the bare loop's."""


def genq_recipe(params: dict, corpus: Path) -> GPTRecipe:
    """genq's gpt recipe, built as a job builds it (params validated, seeded, data loaded)."""
    p = get_spec("gpt").train_params(params)
    torch.manual_seed(p["seed"])
    recipe = GPTRecipe(p, "cpu", QuietHooks())
    recipe.build(api.DataSource(kind="text", path=corpus), None)
    recipe.prepare(0)
    return recipe


def transformers_step(recipe: GPTRecipe, bf16: bool = False):
    """One training step of GPT2LMHeadModel at the recipe's shape, on the recipe's batches, with its AdamW;
    under the CPU's bf16 autocast if `bf16`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    p = recipe.p
    config = GPT2Config(vocab_size=recipe.tok.vocab_size, n_positions=p["block_size"], n_embd=p["n_embd"],
                        n_layer=p["n_layer"], n_head=p["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    net = GPT2LMHeadModel(config)
    opt = optim.adamw([q for q in net.parameters() if q.requires_grad], p["lr"], p["weight_decay"], (0.9, 0.99),
                      "cpu")
    net.train()

    def step(_: int) -> dict[str, torch.Tensor]:
        x, y = recipe.ds.get_batch("train")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(input_ids=x).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), p["grad_clip"])
        opt.step()
        return {"loss": loss.detach()}

    return step


def matmul_step(n: int = 2048, dtype: torch.dtype = torch.float32):
    """One n x n matrix product (2 n^3 FLOPs): the machine's attainable rate in `dtype`."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return lambda _: torch.mm(a, b)


def race(contestants: dict[str, callable], rounds: int, steps: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per step of each contestant, run in alternating rounds of `steps` steps."""
    for fn in contestants.values():
        for s in range(warmup):
            fn(s)
    times: dict[str, list[float]] = {name: [] for name in contestants}
    for r in range(rounds):
        for name, fn in contestants.items():
            t0 = time.perf_counter()
            for s in range(steps):
                fn(r * steps + s)
            times[name].append((time.perf_counter() - t0) / steps)
    return {name: statistics.median(ts) for name, ts in times.items()}


def compiled_step(params: dict, corpus: Path):
    """genq's step with compile=true (torch.compile, inductor); (step, seconds of its first two steps: compiling)."""
    recipe = genq_recipe({**params, "compile": True}, corpus)
    t0 = time.perf_counter()
    for s in range(2):
        recipe.step(s)
    return recipe.step, time.perf_counter() - t0


def compare_shape(name: str, shape: tuple, corpus: Path, rounds: int, compile_too: bool = False) -> bool:
    """Print genq against transformers at one shape (and genq compiled, steady state); whether genq met the goal."""
    n_layer, n_head, n_embd, block, batch, goal = shape
    params = {**JOB_PARAMS, "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "block_size": block,
              "batch_size": batch, "optimizer": "adamw"}
    recipe = genq_recipe(params, corpus)
    tokens = batch * block
    steps = max(1, 10_000 // (tokens * n_layer * n_embd // 512))  # rounds of about the same length
    contestants = {"genq": recipe.step, "transformers": transformers_step(recipe), "matmul": matmul_step()}
    peers = ["transformers"]
    genq_bf16 = dev.matmul_dtype("cpu", n_embd) == torch.bfloat16
    if genq_bf16:  # genq trains under bf16 autocast here: the peer does too, and the bf16 rate is shown
        contestants["transformers bf16"] = transformers_step(recipe, bf16=True)
        contestants["matmul bf16"] = matmul_step(dtype=torch.bfloat16)
        peers.append("transformers bf16")
    if compile_too:
        contestants["genq compiled"], compiling = compiled_step(params, corpus)
    secs = race(contestants, rounds, steps)
    peak = 2 * 2048 ** 3 / secs["matmul"] / 1e9
    print(f"shape {name}: {n_layer} layers, {n_head} heads, {n_embd} wide, block {block}, batch {batch}, "
          f"{VOCAB} tokens ({steps} steps x {rounds} rounds each); 2048^3 matmul {peak:.1f} GFLOP/s float32"
          + (f", {2 * 2048 ** 3 / secs['matmul bf16'] / 1e9:.1f} bf16" if "matmul bf16" in secs else ""))
    print(f"  genq computes in {'bf16 (autocast: the CPU has bf16 units)' if genq_bf16 else 'float32'}")
    fpt = flops_per_token(n_layer, n_embd, block, VOCAB)
    rates = {}
    for who in ("genq", *peers, *(["genq compiled"] if compile_too else [])):
        rates[who] = tokens / secs[who]
        gflops = rates[who] * fpt / 1e9
        print(f"  {who:17s} {rates[who]:9.0f} tokens/s  {secs[who] * 1e3:8.1f} ms/step  {gflops:6.1f} GFLOP/s "
              f"({gflops / peak:.0%} of the float32 matmul)")
    for peer in peers:
        print(f"  genq / {peer} = {rates['genq'] / rates[peer]:.2f}x")
    best = max(peers, key=rates.get)  # the goal is judged against the faster of transformers' two precisions
    ratio = rates["genq"] / rates[best]
    print(f"  genq / the faster transformers ({best}) = {ratio:.2f}x (goal >= {goal}x) "
          f"{'PASS' if ratio >= goal else 'MISS'}", flush=True)
    if compile_too:  # not the goal's figure: a job pays the compiling too
        print(f"  genq compiled / transformers = {rates['genq compiled'] / rates['transformers']:.2f}x steady "
              f"state, after {compiling:.1f} s of compiling (its first two steps)", flush=True)
    return ratio >= goal


def bare_loop(corpus: Path, params: dict) -> float:
    """Seconds of the recipe's steps with its learning-rate schedule, nothing else (its build not counted)."""
    recipe = genq_recipe(params, corpus)
    start = time.perf_counter()
    schedule = recipe.lr_schedule()
    for step in range(recipe.p["max_steps"]):
        for opt in recipe.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = schedule(step)
        recipe.step(step)
    float(recipe.step(recipe.p["max_steps"])["loss"])  # one more, read: the queue is empty on every device
    return time.perf_counter() - start


def job_seconds(client, dataset: int, params: dict) -> tuple[float, float]:
    """Run the recipe as a genq job through the platform `client` talks to: (finished_at - started_at, the
    seconds its steps took by its own throughput metric, evaluations and checkpoints left out)."""
    wait_until_settled(client)
    job_id = client.submit({"type": "train", "model": "gpt", "params": params, "dataset": dataset})["id"]
    job = succeeded(client, job_id)  # on the job's event stream: the web's CPU beside the job's, as `genq wait`'s
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    tokens, steps, done = params["batch_size"] * params["block_size"], 0.0, 0
    for step, rate in client.metrics(job_id, points=10_000)["throughput/tokens_per_s"]:  # one per logged window
        steps += (step - done) * tokens / rate
        done = step
    return (finished - started).total_seconds(), steps


def compare_job(corpus: Path, rounds: int) -> bool:
    """Print the 300-step job against the bare loop, `rounds` of each in turn (bare loop, job, ..., bare loop)
    with the platform up and idle around the bare loops; the ratio of their medians. Whether it met the goal."""
    params = {**JOB_PARAMS}
    bare, jobs, job_steps, bare_cpu, job_cpu = [], [], [], [], []
    bare_stolen, job_stolen = [], []  # CPU seconds the hypervisor took over each
    with tempfile.TemporaryDirectory() as tmp:
        process, client = start_platform(Path(tmp) / "home")

        def timed_bare() -> None:
            wait_until_settled(client)
            cpu, stolen = time.process_time(), stolen_seconds()  # process_time: the bare loop's torch threads
            bare.append(bare_loop(corpus, params))
            bare_cpu.append(time.process_time() - cpu)
            bare_stolen.append(stolen_seconds() - stolen)

        try:
            dataset = client.upload(corpus)["id"]
            for _ in range(rounds):
                timed_bare()
                before, stolen = platform_cpu(process.pid), stolen_seconds()
                total, steps = job_seconds(client, dataset, params)
                after = platform_cpu(process.pid)
                job_stolen.append(stolen_seconds() - stolen)
                job_cpu.append({name: after[name] - before.get(name, 0.0) for name in after})
                jobs.append(total)
                job_steps.append(steps)
            timed_bare()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(120)
    ratio = statistics.median(bare) / statistics.median(jobs)
    # each job against the mean of the bare loops either side of it: the machine's drift over the run cancels
    paired = statistics.median((b + a) / 2 / j for b, a, j in zip(bare, bare[1:], jobs, strict=False))
    print(f"300-step job ({params['max_steps']} steps, checkpoint every {params['checkpoint_interval']}, "
          f"evaluation at {params['eval_interval']} and the end), {rounds} rounds:")
    print(f"  bare loop   {' '.join(f'{b:.1f}' for b in bare)} s (the steps alone)")
    print(f"  genq job    {' '.join(f'{j:.1f}' for j in jobs)} s from started_at to finished_at")
    print(f"    its steps {' '.join(f'{j:.1f}' for j in job_steps)} s by its throughput metric; the rest "
          f"{' '.join(f'{j - t:.2f}' for j, t in zip(jobs, job_steps, strict=True))} s (start, evaluations, galleries, "
          "checkpoints, final samples, end)")
    if job_cpu and job_cpu[0]:  # the CPU each took: the job's worker against the bare loop, and the rest
        print(f"  CPU seconds: bare loop {' '.join(f'{c:.1f}' for c in bare_cpu)}; over each job "
              + "; ".join(", ".join(f"{name} {c:.2f}" for name, c in sorted(cpu.items(), key=lambda kv: -kv[1])
                                    if c >= 0.01) for cpu in job_cpu))
    if any(bare_stolen):  # a virtual machine's CPUs given to other guests: time neither side could use
        print("  stolen by the hypervisor (CPU seconds): over each bare loop "
              f"{' '.join(f'{c:.1f}' for c in bare_stolen)}; over each job {' '.join(f'{c:.1f}' for c in job_stolen)}")
    print(f"  bare / job = {ratio:.2f}x, of the medians (goal >= 0.95x) {'PASS' if ratio >= 0.95 else 'MISS'}; "
          f"{paired:.2f}x the median of each job against the bare loops either side of it", flush=True)
    return ratio >= 0.95


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.environ.get("GENQ_BENCH_CORPUS"),
                    help="tinyshakespeare.txt, for the job comparison (default: $GENQ_BENCH_CORPUS)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shapes", default="small,large", help=f"some of {', '.join(SHAPES)}, comma-separated")
    ap.add_argument("--no-job", action="store_true", help="skip the job-against-bare-loop comparison")
    ap.add_argument("--job-rounds", type=int, default=3, help="jobs run, each after a bare loop")
    ap.add_argument("--compile", action="store_true",
                    help="also genq's step under torch.compile (compile=true): minutes of compiling per shape")
    args = ap.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    if unknown := [s for s in shapes if s not in SHAPES]:
        ap.error(f"no shape {', '.join(unknown)}: the shapes are {', '.join(SHAPES)}")
    if not args.no_job and not (args.corpus and Path(args.corpus).is_file()):
        ap.error("the job comparison trains on tinyshakespeare.txt: pass --corpus PATH (or --no-job)")
    torch.set_num_threads(args.threads)
    dev.keep_freed_heap()  # the worker's malloc setting (genq.worker.celery_app): the bare loop allocates as a job
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores", flush=True)
    met = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = synthetic_corpus(Path(tmp))
        met += [compare_shape(name, SHAPES[name], corpus, args.rounds, args.compile) for name in shapes]
    if not args.no_job:
        met.append(compare_job(Path(args.corpus), args.job_rounds))
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
