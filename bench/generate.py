"""Text generation speed: genq's continuous-batching engine against its peers, measured side by side in one run.

For the gpt of nanoGPT's CPU recipe (4 layers, 4 heads, 128 wide, vocabulary 65, block 256), random weights,
sampling at temperature 1 over the whole vocabulary, prints tokens/s and the ratio for:
1. genq's bare engine (genq.core.batch) against transformers' GPT2LMHeadModel.generate (the same shape, built
   from a config: nothing downloaded), 200 new tokens per prompt, at batch 1 and batch 32;
2. genq against the article's loop (the whole sequence re-run for every token, no cache), at batch 1 and 32;
3. a 512-row file with per-row max_new_tokens drawn from 20..200: continuous batching against static batches
   of 32 (the same engine, a batch admitted only once the last one has finished, and every row of a batch
   decoded until its longest row ends, as transformers' generate and other static batchers do; printed too,
   for comparison, against this engine's own static batches, whose finished rows' slots idle, decoding a
   dummy token that reads one key);
4. the same 512 rows as a job through the platform (`genq up`, a trained gpt of that shape): the job's own
   throughput/tokens_per_s and its submit-to-finish rate, against the engine run bare on that model.

    .venv/bin/python bench/generate.py            # everything (a few minutes on two cores)
    .venv/bin/python bench/generate.py --quick    # fewer tokens and rows, no platform: a smoke run

Sections 1-3 run with one torch thread (on a shared two-core machine more threads mostly wait for each other)
and time CPU seconds of this process (time.process_time), not wall time: the machine is shared, and wall time
there mostly measures the neighbours. Section 4 is wall time (the job runs in another process), the job's own
throughput metric against the same metric of the engine run bare in this process just before and just after
the job, with the torch threads of the worker `genq up` starts (all the cores: one slot). Exits 1 if a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from genq.worker.process import SPIN_COUNT  # noqa: E402 - imports no torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)  # as genq's CPU workers run (genq.worker.process)

import torch  # noqa: E402

from genq.core.api import Hooks  # noqa: E402
from genq.core.batch import BatchGenerator, Request  # noqa: E402
from genq.core.models.gpt.net import GPT, GPTConfig  # noqa: E402

SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=256)
VOCAB, PROMPT = 65, 16
CORPUS = Path(__file__).parent.parent / "tests" / "data" / "tinyshakespeare-20k.txt"


def clock() -> float:
    """Seconds of CPU this process has used: on a shared machine wall time mostly measures the neighbours, and
    with one torch thread CPU time is what a run costs."""
    return time.process_time()


def genq_rate(model: GPT, prompts: list[list[int]], new: list[int], slots: int, continuous: bool = True) -> float:
    """Tokens/s of genq's engine generating new[i] tokens after prompts[i], `slots` rows at a time."""
    requests = [Request(i, p, n, seed=i) for i, (p, n) in enumerate(zip(prompts, new, strict=True))]
    made = []
    start = clock()
    BatchGenerator(model, slots, continuous=continuous).run(requests, lambda f: made.append(len(f.tokens)))
    seconds = clock() - start
    assert sum(made) == sum(new), "every row generates its max_new_tokens (no EOS here)"
    return sum(made) / seconds


def hf_rate(hf, prompts: list[list[int]], new: int) -> float:
    """Tokens/s of transformers' generate, sampling at temperature 1 over the whole vocabulary."""
    idx = torch.tensor(prompts)
    start = clock()
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=True, top_k=0, top_p=1.0,
                      temperature=1.0, max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
    seconds = clock() - start
    return (out.size(1) - idx.size(1)) * idx.size(0) / seconds


@torch.no_grad()
def rerun_rate(model: GPT, prompts: list[list[int]], new: int) -> float:
    """Tokens/s of the article's loop: the whole sequence through the model for every new token."""
    idx = torch.tensor(prompts)
    gen = torch.Generator().manual_seed(0)
    start = clock()
    for _ in range(new):
        logits = model(idx)[0][:, -1, :]
        idx = torch.cat([idx, torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)], dim=1)
    return new * idx.size(0) / (clock() - start)


def best_of(ours, peer, repeats: int = 3) -> tuple[float, float]:
    """The best rate of each of two measurements, run in turn `repeats` times: the machine is shared, and a
    neighbour's burst should not land on one side only."""
    a, b = [], []
    for _ in range(repeats):
        a.append(ours())
        b.append(peer())
    return max(a), max(b)


def line(what: str, ours: float, peer: float, goal: float | None) -> bool:
    """Print one comparison; whether it meets its goal."""
    ratio = ours / peer
    ok = goal is None or ratio >= goal
    target = f"(goal >= {goal:g}x{'' if ok else ', MISSED'})" if goal else ""
    print(f"{what:52} genq {ours:9.0f} tok/s  peer {peer:9.0f} tok/s  {ratio:6.2f}x {target}", flush=True)
    return ok


def bare(quick: bool) -> list[bool]:
    """Sections 1-3; whether each met its goal."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, **SHAPE)).eval()
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=SHAPE["block_size"], n_embd=SHAPE["n_embd"],
                                    n_layer=SHAPE["n_layer"], n_head=SHAPE["n_head"], bos_token_id=None,
                                    eos_token_id=None)).eval()
    rnd = random.Random(0)
    new = 40 if quick else 200
    results = []
    print(f"threads {torch.get_num_threads()}; gpt {model.num_params():,} parameters; {new} new tokens per prompt")
    for batch in (1, 32):
        prompts = [[rnd.randrange(VOCAB) for _ in range(PROMPT)] for _ in range(batch)]
        genq_rate(model, prompts[:1], [8], 1)  # warm up both
        hf_rate(hf, prompts[:1], 8)
        ours, peer = best_of(lambda: genq_rate(model, prompts, [new] * batch, batch),  # noqa: B023
                             lambda: hf_rate(hf, prompts, new))  # noqa: B023
        results.append(line(f"batch {batch}: against transformers' generate", ours, peer, 5.0 if batch == 1 else 2.0))
        ours, peer = best_of(lambda: genq_rate(model, prompts, [new] * batch, batch),  # noqa: B023
                             lambda: rerun_rate(model, prompts, new), repeats=1)  # noqa: B023
        results.append(line(f"batch {batch}: against the re-run-everything loop", ours, peer,
                            10.0 if batch == 32 else None))
    return results + rows_section(model, quick)


def padded_rate(model: GPT, prompts: list[list[int]], new: list[int], slots: int) -> float:
    """Tokens/s of static batching as transformers' generate does it: each batch of `slots` rows decodes until
    its longest row ends, every row to the end (a finished row's slot is not freed, and it attends to its whole
    context); only the tokens each row asked for count."""
    longest = [max(new[i - i % slots:i - i % slots + slots]) for i in range(len(new))]  # each row's batch's
    return genq_rate(model, prompts, longest, slots, continuous=False) * sum(new) / sum(longest)


def rows_section(model: GPT, quick: bool) -> list[bool]:
    """Section 3: continuous batching against static batches of 32 (the goal's peer: every row decoded to its
    batch's end, as generate does; and, for comparison, this engine's static batches, whose finished rows' slots
    decode a dummy token); whether it met its goal."""
    rnd = random.Random(1)
    rows = 128 if quick else 512
    prompts = [[rnd.randrange(VOCAB) for _ in range(rnd.randrange(4, 40))] for _ in range(rows)]
    lengths = [rnd.randint(20, 200) for _ in range(rows)]
    continuous, static = best_of(lambda: genq_rate(model, prompts, lengths, 32),
                                 lambda: padded_rate(model, prompts, lengths, 32), repeats=2)
    idle = genq_rate(model, prompts, lengths, 32, continuous=False)
    ok = line(f"{rows} rows, max_new_tokens 20..200: continuous vs static 32", continuous, static, 1.5)
    line("  the same vs static 32 with finished rows' slots idle", continuous, idle, None)
    return [ok]


class Bare(Hooks):
    """Hooks of a bare run: keeps the engine's last throughput/tokens_per_s (what a job reports as its metric)."""

    rate = 0.0

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.rate = values.get("throughput/tokens_per_s", self.rate)


def platform(rows: int = 512) -> list[bool]:
    """Section 4: the 512-row job through the platform against the engine bare on the same model, run just before
    and just after the job (their mean: the machine's load drifts)."""
    from quality import start_platform, succeeded

    from genq.core.data.prompts import PromptRow
    from genq.core.models.gpt.recipe import GPTRecipe

    rnd = random.Random(1)
    text = CORPUS.read_text()
    lines = []
    for i in range(rows):
        start = rnd.randrange(len(text) - 40)
        lines.append({"id": f"p{i}", "prompt": text[start:start + rnd.randrange(4, 40)],
                      "max_new_tokens": rnd.randint(20, 200)})
    todo = [PromptRow(i, line["prompt"], line["id"], {"max_new_tokens": line["max_new_tokens"]})
            for i, line in enumerate(lines)]
    params = {"batch_size": 32, "seed": 7, "temperature": 1.0}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        process, client = start_platform(home, OMP_NUM_THREADS="1")
        try:
            corpus = client.upload(CORPUS)["id"]
            train = client.submit({"type": "train", "model": "gpt", "dataset": corpus, "params": {
                "tokenizer": "char", **SHAPE, "batch_size": 4, "max_steps": 20, "eval_interval": 20}})["id"]
            succeeded(client, train, 1800)
            # a folder store keeps each attempt's files under jobs/ID/aN/: the job's last attempt holds its model
            source = max((home / "artifacts" / "jobs" / str(train)).glob("a*"), key=lambda run: int(run.name[1:]))

            def bare() -> float:  # with the torch threads of the worker `genq up` starts (worker_children)
                hooks, threads = Bare(), torch.get_num_threads()
                torch.set_num_threads(max(1, os.cpu_count() or 1))
                try:
                    GPTRecipe.generate_rows(source, todo, params, hooks, "cpu")
                finally:
                    torch.set_num_threads(threads)
                return hooks.rate

            prompts = home / "prompts.jsonl"
            prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
            dataset = client.upload(prompts)["id"]
            before = bare()
            start = time.monotonic()
            job = client.submit({"type": "generate", "source_job": train, "dataset": dataset, "params": params})
            done = succeeded(client, job["id"], 1800)
            wall = time.monotonic() - start
            after = bare()
            outputs = client.request("GET", f"/jobs/{job['id']}/outputs")["outputs"]
            series = client.metrics(job["id"], points=10_000)
            job_rate = series["throughput/tokens_per_s"][-1][1]
            tokens = sum(len(o["text"]) - len(o["prompt"]) for o in outputs if o["status"] == "ok")
            assert done["rows_done"] == rows and len(outputs) == rows, (done, len(outputs))
        finally:
            process.terminate()
            process.wait(30)
    bare_rate = (before + after) / 2
    print(f"bare engine before the job {before:.0f} tok/s, after it {after:.0f} tok/s")
    ok = [line(f"{rows}-row job: its throughput metric vs bare engine", job_rate, bare_rate, 0.9)]
    line(f"{rows}-row job: submit to finish ({wall:.1f} s) vs bare engine", tokens / wall, bare_rate, None)
    # the job's own rate covers its engine run, row flushes included; the rest is dispatch, loading, the files
    print(f"{rows}-row job: {tokens / job_rate:.1f} s in the engine (its metric), {wall - tokens / job_rate:.1f} s "
          f"around it (dispatch, model load, prompts file, the final outputs files)")
    return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and rows, no platform")
    parser.add_argument("--platform-only", action="store_true", help="only section 4")
    parser.add_argument("--rows-only", action="store_true", help="only section 3")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.rows_only:
        torch.manual_seed(0)
        return 0 if all(rows_section(GPT(GPTConfig(vocab_size=VOCAB, **SHAPE)).eval(), args.quick)) else 1
    results = [] if args.platform_only else bare(args.quick)
    if not args.quick:
        results += platform()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main(sys.argv[1:]))
