"""Quality check of the media models with their default params, trained through genq.core.api on CPU.

    .venv/bin/python bench/quality_media.py [dcgan] [vae] [wavenet] [--param KEY=VALUE ...]

- dcgan (conditional="prompt") on digits: the fraction of generated digits that an independent classifier
  (scikit-learn SVC on the original 8x8 digits) labels as the requested digit; prompts are "7", "seven"
  and "a handwritten seven" style, for every digit. Target >= 90%.
- vae on digits: the fraction of reconstructions of held-out digits the SVC labels like the original.
  Target >= 90%.
- wavenet on tones: the fraction of one-second generated clips whose dominant frequency is within 3% of
  one of the training tones. Target >= 80%.
Not a test: it takes minutes. Prints one line per model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from genq.core import api, checkpoint, spec
from genq.core.data.builtin_media import DIGIT_WORDS, TONE_NOTES, digits
from genq.core.eval.audio import dominant_frequency
from genq.core.models.vae.net import VAE, VAEConfig
from genq.jobs.service import parse_param_lines


class PrintHooks(api.Hooks):
    def log(self, message: str) -> None:
        print(f"    {message}", flush=True)


def svc() -> SVC:
    """An independent digit classifier: an RBF SVM on scikit-learn's 8x8 digits (pixel values 0..16)."""
    d = load_digits()
    return SVC(gamma=0.001, C=10).fit(d.data, d.target)


def to_8x8(images: torch.Tensor) -> np.ndarray:
    """(N, 1, S, S) in [0, 1] -> (N, 64) on the 0..16 scale of the original digits."""
    return (F.adaptive_avg_pool2d(images, 8).flatten(1) * 16).numpy()


def load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255).unsqueeze(0)


def bench_dcgan(root: Path, extra: dict) -> dict:
    params = {"conditional": "prompt", **extra}
    t = time.time()
    res = api.train("dcgan", params, api.DataSource("images", builtin="digits"), root / "dcgan", PrintHooks())
    train_s = time.time() - t
    prompts, wanted = [], []
    for d, word in enumerate(DIGIT_WORDS):
        for prompt in (str(d), word, f"a handwritten {word}"):
            prompts.append(prompt)
            wanted.append(d)
    per_prompt = 20
    samples = api.generate(root / "dcgan", prompts, {"num_samples": per_prompt, "seed": 7}, root / "dcgan-out",
                           api.Hooks())
    images = torch.stack([load_png(s.path) for s in samples])
    size = spec.get("dcgan").train_params(params)["image_size"] or 16
    images = F.interpolate(images, size=(size, size), mode="area")  # undo the PNG enlargement
    labels = np.repeat(wanted, per_prompt)
    score = float((svc().predict(to_8x8(images)) == labels).mean())
    return {"model": "dcgan", "metric": "svc_accuracy_on_requested_digit", "value": score, "target": 0.9,
            "train_s": round(train_s), "eval": res.metrics}


def bench_vae(root: Path, extra: dict) -> dict:
    t = time.time()
    res = api.train("vae", extra, api.DataSource("images", builtin="digits"), root / "vae", PrintHooks())
    train_s = time.time() - t
    p = spec.get("vae").train_params(extra)
    ckpt = checkpoint.load_latest(root / "vae")
    net = VAE(VAEConfig(**ckpt.config))
    ckpt.load_into({"model": net})
    net.eval()
    _, val = digits(ckpt.config["image_size"]).split(0.1, p["seed"])  # the recipe's held-out images
    rec = net.reconstruct(val.floats())
    score = float((svc().predict(to_8x8(rec)) == val.labels.numpy()).mean())
    return {"model": "vae", "metric": "svc_accuracy_on_reconstructions", "value": score, "target": 0.9,
            "train_s": round(train_s), "eval": res.metrics}


def bench_wavenet(root: Path, extra: dict) -> dict:
    t = time.time()
    res = api.train("wavenet", extra, api.DataSource("audio", builtin="tones"), root / "wavenet", PrintHooks())
    train_s = time.time() - t
    rate = spec.get("wavenet").train_params(extra)["sample_rate"]
    samples = api.generate(root / "wavenet", [None], {"num_samples": 16, "seconds": 1.0, "seed": 7},
                           root / "wavenet-out", api.Hooks())
    from genq.core.data.audio import read_wav

    tones = np.array(list(TONE_NOTES.values()))
    hits = []
    for s in samples:
        clip, _ = read_wav(s.path.read_bytes())
        f = dominant_frequency(clip, rate)
        hits.append(f is not None and bool(np.any(np.abs(tones - f) <= 0.03 * tones)))
    return {"model": "wavenet", "metric": "clips_within_3pct_of_a_tone", "value": float(np.mean(hits)),
            "target": 0.8, "train_s": round(train_s), "eval": res.metrics}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["dcgan", "vae", "wavenet"])
    ap.add_argument("--param", action="append", default=[], help="KEY=VALUE (JSON value) for every model")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    extra = parse_param_lines("\n".join(args.param))  # the CLI's KEY=VALUE reading
    runs = {"dcgan": bench_dcgan, "vae": bench_vae, "wavenet": bench_wavenet}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(f"== {name}", flush=True)
            r = runs[name](Path(tmp), extra)
            ok &= r["value"] >= r["target"]
            print(json.dumps(r), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
