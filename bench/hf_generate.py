"""What hf-causal-lm's sampler (one seeded generator per row, the model's own KV cache) costs against Hugging Face's
`model.generate` on the same model, batch and token count, in the same run.

Not part of the test suite. A random GPT-2 (built here, saved with save_pretrained, loaded back offline) continues
one prompt for `--rows` rows of `--tokens` new tokens: genq's batched sampler, HF generate (do_sample, one random
stream for the batch, no early stop), and genq's sampler one row at a time (what per-row seeds would cost without
batching). Prints the median of `--repeat` runs in new tokens per second, and each ratio to HF generate.

    .venv/bin/python bench/hf_generate.py                       # CPU, one thread
    .venv/bin/python bench/hf_generate.py --device cuda --layers 12 --width 768
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.hf_tiny builds the model folder

import torch  # noqa: E402

from tests.hf_tiny import build_tiny_gpt2  # noqa: E402


def timed(device: str, fn) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from genq.core.models.hf_causal_lm.recipe import load_pretrained, load_tokenizer
    from genq.core.models.hf_causal_lm.sampling import sample_rows

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_gpt2(Path(tmp) / "bench", n_positions=args.tokens + 64, n_layer=args.layers,
                                 n_embd=args.width, n_head=max(1, args.width // 64))
        net, tok = load_pretrained(folder).to(args.device).eval(), load_tokenizer(folder)
    prompt = tok.encode("ROMEO:\nWhat light through yonder window breaks?", add_special_tokens=False)
    seeds = list(range(args.rows))
    x = torch.tensor([prompt] * args.rows, device=args.device)

    def ours():
        sample_rows(net, prompt, seeds, args.device, max_new_tokens=args.tokens)

    def one_by_one():
        for s in seeds:
            sample_rows(net, prompt, [s], args.device, max_new_tokens=args.tokens)

    @torch.no_grad()
    def hf_generate():
        net.generate(x, attention_mask=torch.ones_like(x), do_sample=True, top_k=0, max_new_tokens=args.tokens,
                     min_new_tokens=args.tokens, pad_token_id=tok.eos_token_id)

    runs = {"hf generate": hf_generate, "genq sample_rows": ours, "genq, one row at a time": one_by_one}
    for fn in runs.values():  # warm-up: allocator, kernels
        fn()
    results = {name: statistics.median(timed(args.device, fn) for _ in range(args.repeat)) for name, fn in runs.items()}
    new_tokens = args.rows * args.tokens
    print(f"{args.layers} layers of {args.width}, {args.rows} rows x {args.tokens} new tokens on {args.device}, "
          f"{args.threads} thread(s), median of {args.repeat}")
    peer = results["hf generate"]
    for name, seconds in results.items():
        print(f"  {name:26s} {new_tokens / seconds:9.0f} tokens/s   {seconds * 1000:8.1f} ms   "
              f"ratio to hf generate {peer / seconds:5.2f}")


if __name__ == "__main__":
    main()
