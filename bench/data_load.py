"""A text job's data load on a large corpus (a script, not a test): genq's corpus encoding against the plain
Python path it replaced, side by side in one run.

    .venv/bin/python bench/data_load.py --corpus tinyshakespeare.txt [--copies 100] [--tokenizers char,word,bpe]

The corpus is repeated --copies times (100: 110 MB of tinyshakespeare). For each tokenizer, a fresh process
trains it on the text and builds the job's dataset (genq.core.data.text.TextData) from:
- genq: `encode_corpus` (char: a numpy lookup a slice at a time; bpe: batches of lines on all cores), ids kept
  in the narrowest integer type;
- the peer: `encode` (a Python list) and `torch.as_tensor(..., dtype=torch.long)`, as genq did before.
Each prints seconds (tokenizer training excluded: the same code on both sides) and the process' peak memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
import torch
from genq.core.api import DataSource
from genq.core.data.text import TextData, build_tokenizer, load_text
name, path, way = sys.argv[1:4]
text = load_text(DataSource(kind="text", path=Path(path)))
tok = build_tokenizer(name, text, 2000)
start = time.perf_counter()
ids = tok.encode_corpus(text) if way == "genq" else torch.as_tensor(tok.encode(text), dtype=torch.long)
data = TextData(ids, 64, 12, 0)
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": len(data.train) + len(data.val),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(tokenizer: str, path: Path, way: str) -> dict:
    """One fresh process' encoding and dataset build."""
    out = subprocess.run([sys.executable, "-c", CHILD, tokenizer, str(path), way], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--tokenizers", default="char,word,bpe")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_text(args.corpus.read_text(encoding="utf-8") * args.copies, encoding="utf-8")
        print(f"corpus: {args.corpus.name} x {args.copies} = {path.stat().st_size / 1e6:.0f} MB")
        for name in args.tokenizers.split(","):
            ours, peer = measure(name, path, "genq"), measure(name, path, "peer")
            assert ours["tokens"] == peer["tokens"], (name, ours, peer)
            print(f"{name:5} {ours['tokens']:>11,} tokens  genq {ours['seconds']:6.2f} s {ours['peak_mb']:6.0f} MB  "
                  f"peer {peer['seconds']:6.2f} s {peer['peak_mb']:6.0f} MB  "
                  f"{peer['seconds'] / ours['seconds']:5.1f}x faster, {peer['peak_mb'] / ours['peak_mb']:4.1f}x less "
                  f"memory at peak", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
