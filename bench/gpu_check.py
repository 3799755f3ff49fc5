"""genq on an NVIDIA GPU: training tokens/s and MFU of genq's GPT at GPT-2-small shape (12 layers, 12 heads,
768 wide, block 1024, a 50304-word vocabulary), in a bare loop and as a genq job, and batch-generation tokens/s
from that job's checkpoint. bench/gpu_check.sh runs it (and installs what it needs); it prints a table and
writes the numbers as JSON (--json).

    bench/gpu_check.sh                  # on a machine with an NVIDIA GPU: under 5 minutes
    bench/gpu_check.sh --cpu-smoke      # the same steps at a tiny shape on the CPU: checks the script itself

1. A bare loop of genq.core's GPT (bf16 autocast, fused AdamW, batches drawn on the GPU) for --seconds, eager,
   then compiled (--no-compile leaves that out). The ceiling the job is measured against.
2. The same model as a genq job through the real platform: `genq up` in a temporary GENQ_HOME, the corpus
   uploaded and the job submitted over HTTP, throughput/tokens_per_s, throughput/mfu and memory/peak_bytes
   read back from its metrics. Its length is set from the bare loop's speed to train for about --seconds.
3. Generation from the job's checkpoint: through the engine of batch generation jobs (genq.core.batch), and
   through genq.core.sample.generate, each under the job's autocast.

The data is a corpus generated here (made-up words with Zipf frequencies, every one of the vocabulary's words
present): nothing is downloaded. MFU counts 6N + 12 L d T FLOPs per token (GPT.flops_per_token) against the
GPU's dense bf16 peak from genq.core.device's table; n/a for a GPU not in it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from genq.core import checkpoint
from genq.core import device as dev
from genq.core import sample as sampling
from genq.core.batch import Request
from genq.core.data.text import WordTokenizer
from genq.core.models.gpt import slots
from genq.core.models.gpt.net import GPT, GPTConfig
from genq.core.models.gpt.recipe import GPTRecipe
from genq.core.spec import get as model_spec

sys.path.insert(0, str(Path(__file__).parent))
from quality import start_platform, succeeded  # noqa: E402 - a sibling script, not a package

# shape, batch, corpus size, seconds per measurement, generation batch
SHAPES = {
    "gpu": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab=50304, batch=16, corpus_tokens=2_000_000,
                seconds=30.0, gen_rows=64, gen_tokens=256),
    "cpu-smoke": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab=512, batch=4, corpus_tokens=60_000,
                      seconds=4.0, gen_rows=8, gen_tokens=32),
}
WARMUP_STEPS = 5  # compiling and the kernels' autotuning happen here, outside the timed window
SYNC_EVERY = 10  # steps between the bare loop's clock reads (each one waits for the GPU)


def sync(device: str) -> None:
    if dev.is_cuda(device):
        torch.cuda.synchronize()


def make_corpus(path: Path, vocab: int, tokens: int, seed: int = 0) -> None:
    """A text of `tokens` made-up words with Zipf frequencies, every word of a lexicon 10% larger than `vocab`
    written once first: the word tokenizer then keeps exactly `vocab` tokens (its 3 specials included)."""
    rng = np.random.default_rng(seed)
    n_words = vocab + vocab // 10
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lexicon = ["".join(letters[(i // 26**k) % 26] for k in range(3 + i // 26**3)) for i in range(n_words)]
    ranks = np.arange(n_words)
    drawn = rng.choice(n_words, size=tokens, p=(p := 1.0 / (ranks + 10.0)) / p.sum())
    words = np.array(lexicon)[np.concatenate([ranks, drawn])]
    lines = (" ".join(words[i:i + 16]) + ".\n" for i in range(0, len(words), 16))
    path.write_text("".join(lines), encoding="utf-8")


def bare_loop(config: GPTConfig, ids: torch.Tensor, batch: int, seconds: float, device: str,
              compile: bool) -> dict:
    """Train `config` on random blocks of `ids` for about `seconds` after a warm-up; its speed and memory."""
    memory = dev.PeakMemory(device)
    torch.manual_seed(0)
    net = GPT(config).to(device)
    model = torch.compile(net) if compile else net
    opt = net.optimizer(6e-4, 0.1, (0.9, 0.99), device)
    data, T = ids.to(device), config.block_size
    offsets = torch.arange(T + 1, device=device)

    def step() -> torch.Tensor:
        ix = torch.randint(len(data) - T - 1, (batch,), device=device)
        blocks = data[ix[:, None] + offsets]
        with dev.autocast(device, config.n_embd):
            _, loss = model(blocks[:, :-1], blocks[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return loss

    start = time.perf_counter()
    for _ in range(WARMUP_STEPS):
        step()
    sync(device)
    warmup = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while True:
        for _ in range(SYNC_EVERY):
            loss = step()
        steps += SYNC_EVERY
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    rate = steps * batch * T / elapsed
    peak = dev.peak_flops(device)
    return {"tokens_per_s": rate, "mfu": rate * net.flops_per_token() / peak if peak else None,
            "peak_bytes": memory.bytes(), "steps": steps, "seconds": elapsed, "warmup_s": warmup,
            "loss": float(loss.detach())}


def settled(points: list[list[float]], max_steps: int) -> float | None:
    """The median of a metric's points after the first fifth of the steps (compiling, warm-up), or None."""
    late = [v for s, v in points if s > max_steps // 5] or [v for _, v in points[1:]] or [v for _, v in points]
    return statistics.median(late) if late else None


def train_job(client, corpus: Path, params: dict, timeout: float) -> dict:
    """Upload `corpus`, train gpt with `params` as a job, and read its speed and memory from its metrics."""
    dataset = client.upload(corpus)["id"]
    submitted = time.monotonic()
    job_id = client.submit({"type": "train", "model": "gpt", "dataset": dataset, "params": params})["id"]
    succeeded(client, job_id, timeout, say=True)
    wall = time.monotonic() - submitted
    series = client.metrics(job_id, points=10_000)  # one bucket a step for any run this script makes
    started_on = [e["message"] for e in client.logs(job_id) if "started on" in e["message"]]
    steps = params["max_steps"]
    return {"job": job_id, "tokens_per_s": settled(series["throughput/tokens_per_s"], steps),
            "mfu": settled(series["throughput/mfu"], steps) if "throughput/mfu" in series else None,
            "peak_bytes": series["memory/peak_bytes"][-1][1] if "memory/peak_bytes" in series else None,
            "estimate_bytes": model_spec("gpt").memory_bytes(model_spec("gpt").train_params(params)),
            "val_loss": series["val/loss"][-1][1], "wall_s": wall, "steps": steps,
            "worker": started_on[-1] if started_on else "?"}


def generation(workdir: Path, device: str, rows: int, new_tokens: int) -> list[tuple[str, dict]]:
    """Tokens/s of `rows` samples of `new_tokens` tokens from the checkpoint in `workdir`: through the engine of
    batch generation jobs (continuous batching; CUDA graphs on a GPU), and through sample.generate (a KV cache
    that grows by a token a step: what a generation job's `prompts`, rather than a prompts file, go through)."""
    ckpt = checkpoint.load_trained(workdir, "gpt")
    tok, net = GPTRecipe.generation_model(ckpt, device)
    start_ids = tok.start_ids()
    x = torch.tensor([start_ids] * rows, device=device)
    gen = sampling.seeded_generator(0, device)

    def engine(n: int, tokens: int) -> int:
        """The tokens generated: a row may end early, at the end-of-text token."""
        made = []
        requests = [Request(i, start_ids, tokens, seed=i) for i in range(n)]
        GPTRecipe._engine(net, tok, device, n).run(requests, lambda row: made.append(len(row.tokens)))
        return sum(made)

    def generate(n: int, tokens: int) -> int:
        return sampling.generate(net, x[:n], tokens, generator=gen)[:, x.size(1):].numel()

    def eager_engine(n: int, tokens: int) -> int:
        with slots.cuda_graphs(False):
            return engine(n, tokens)

    ways = {f"batch generation ({rows} rows x {new_tokens} tokens, engine)": engine,
            f"sample.generate ({rows} rows x {new_tokens} tokens, KV cache)": generate}
    if dev.is_cuda(device):  # the peer of the CUDA graphs: the same engine, each kernel launched from Python
        ways[f"batch generation ({rows} rows x {new_tokens} tokens, engine, eager)"] = eager_engine
    out = []
    for name, run in ways.items():
        memory = dev.PeakMemory(device)
        with GPTRecipe.amp(device):
            run(2, 8)  # warm-up
            sync(device)
            start = time.perf_counter()
            made = run(rows, new_tokens)
            sync(device)
        elapsed = time.perf_counter() - start
        out.append((name, {"tokens_per_s": made / elapsed, "tokens": made, "seconds": elapsed,
                           "peak_bytes": memory.bytes()}))
    return out


def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    return {"rate": f"{value:,.0f}", "mfu": f"{100 * value:.1f}%", "bytes": f"{value / 2**30:.2f} GiB"}[kind]


def summary(info: dict, rows: list[tuple[str, dict]]) -> str:
    peak = f"peak bf16 {info['peak_flops'] / 1e12:.0f} TFLOP/s" if info["peak_flops"] else "no known bf16 peak"
    lines = [f"genq GPU check on {info['device_name']} ({info['device']}, {peak}), torch {info['torch']}",
             f"GPT {info['shape']}: {info['params'] / 1e6:.1f}M parameters, {info['flops_per_token'] / 1e9:.4g} "
             f"GFLOP per token trained",
             f"{'what':50} {'tokens/s':>12} {'MFU':>7} {'peak memory':>12}"]
    for name, r in rows:
        lines.append(f"{name:50} {fmt(r.get('tokens_per_s'), 'rate'):>12} {fmt(r.get('mfu'), 'mfu'):>7} "
                     f"{fmt(r.get('peak_bytes'), 'bytes'):>12}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="a tiny shape on the CPU: checks the script itself")
    ap.add_argument("--seconds", type=float, help="length of each timed training measurement")
    ap.add_argument("--batch-size", type=int, help="sequences per step (default 16 on a GPU)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also a compiled bare loop, and the job with compile=true (default: on a GPU only)")
    ap.add_argument("--json", type=Path, default=Path("bench/out/gpu_check.json"), help="where the numbers go")
    args = ap.parse_args(argv)
    shape = dict(SHAPES["cpu-smoke" if args.cpu_smoke else "gpu"])
    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA GPU here (torch.cuda.is_available() is False): "
                         "bench/gpu_check.sh --cpu-smoke checks the script on a CPU")
    seconds = args.seconds or shape["seconds"]
    batch = args.batch_size or shape["batch"]
    compile = args.compile if args.compile is not None else device == "cuda"
    began = time.monotonic()
    dev.prepare(device)

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "genq"
        print("starting the platform (genq up) ...", flush=True)
        process, client = start_platform(home)  # starts while the corpus and the bare loops run here
        try:
            corpus = Path(tmp) / "corpus.txt"
            make_corpus(corpus, shape["vocab"], shape["corpus_tokens"])
            text = corpus.read_text(encoding="utf-8")
            ids = torch.tensor(WordTokenizer.train(text, shape["vocab"]).encode(text), dtype=torch.long)
            config = GPTConfig(vocab_size=shape["vocab"], block_size=shape["block_size"], n_layer=shape["n_layer"],
                               n_head=shape["n_head"], n_embd=shape["n_embd"])
            with torch.device("meta"):
                counted = GPT(config)
            info = {"device": device, "device_name": torch.cuda.get_device_name() if device == "cuda" else "CPU",
                    "peak_flops": dev.peak_flops(device), "torch": torch.__version__,
                    "shape": f"{config.n_layer}/{config.n_head}/{config.n_embd}, block {config.block_size}, "
                             f"vocab {config.vocab_size}, batch {batch}",
                    "params": counted.num_params(), "flops_per_token": counted.flops_per_token()}
            print(f"corpus: {len(ids):,} tokens ({time.monotonic() - began:.0f} s in)", flush=True)

            rows: list[tuple[str, dict]] = []
            for compiled in [False, True] if compile else [False]:
                name = f"bare loop, {'compiled' if compiled else 'eager'}"
                print(f"{name}: {seconds:.0f} s ...", flush=True)
                rows.append((name, bare_loop(config, ids, batch, seconds, device, compiled)))
                torch._dynamo.reset()  # the model and its compiled graphs go: the GPU's memory is the job's next
                if dev.is_cuda(device):
                    torch.cuda.empty_cache()
                r = rows[-1][1]
                print(f"  {fmt(r['tokens_per_s'], 'rate')} tokens/s, MFU {fmt(r['mfu'], 'mfu')}, after a "
                      f"{r['warmup_s']:.1f} s warm-up ({time.monotonic() - began:.0f} s in)", flush=True)

            # as many steps as the matching bare loop takes in `seconds`: the job trains about as long
            ref = rows[-1][1]
            steps = max(50, int(seconds * ref["tokens_per_s"] / (batch * config.block_size)))
            params = {"tokenizer": "word", "vocab_size": shape["vocab"], "n_layer": config.n_layer,
                      "n_head": config.n_head, "n_embd": config.n_embd, "block_size": config.block_size,
                      "batch_size": batch, "dropout": 0.0, "lr": 6e-4, "warmup_steps": min(100, steps // 10),
                      "max_steps": steps, "eval_interval": steps, "eval_iters": 5, "checkpoint_interval": steps,
                      "optimizer": "adamw", "compile": compile, "seed": 1337}  # the bare loop's optimizer
            name = f"genq job ({steps} steps{', compile=true' if compile else ''})"
            print(f"{name} ...", flush=True)
            job = train_job(client, corpus, params, timeout=max(600.0, 10 * seconds))
            rows.append((name, job))
            print(f"  {job['worker']}; {job['wall_s']:.0f} s from submission to the end, val/loss "
                  f"{job['val_loss']:.3f} ({time.monotonic() - began:.0f} s in)", flush=True)

            # a folder store keeps each attempt's files under jobs/ID/aN/: the job's last attempt holds its model
            runs = (Path(os.environ.get("GENQ_ARTIFACTS") or home / "artifacts") / "jobs" / str(job["job"])).glob("a*")
            workdir = max(runs, key=lambda run: int(run.name[1:]))
            rows += generation(workdir, device, shape["gen_rows"], shape["gen_tokens"])
        except BaseException:
            log = (home / "up.log").read_text(errors="replace").splitlines()[-40:]
            print("\n--- the end of the platform's log ---\n" + "\n".join(log), flush=True)
            raise
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(120)

    total = time.monotonic() - began
    print()
    print(summary(info, rows))
    ratio = job["tokens_per_s"] / ref["tokens_per_s"]
    print(f"job memory: estimated at submission {fmt(job['estimate_bytes'], 'bytes')}, measured peak "
          f"{fmt(job['peak_bytes'], 'bytes')}; job / bare loop tokens/s: {ratio:.2f}")
    print(f"total {total:.0f} s" + (" (over the 5 minutes this check should take)" if total > 300 else ""))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"info": info, "rows": dict(rows), "total_s": total}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
