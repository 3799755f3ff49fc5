"""The `wavenet` recipe: a WaveNet on 16-bit WAV audio (mu-law codes), optionally conditioned on the label.

Training windows are random `segment_length`-sample slices of the first 90% of every clip; the last 10%
of every clip is the validation audio. Adam with a fixed learning rate, gradient clipping at 1.
Metrics: train/loss (nats per audio sample), val/loss, throughput/samples_per_s (audio samples per
second), eval/pitch_accuracy and eval/spectral_distance of one-second generated clips (see
genq.core.eval.audio). Generation is autoregressive from silence, one clip per sample.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genq.core import checkpoint, nets
from genq.core import train as loop
from genq.core.api import DataError, DataSource, Hooks, Sample, TrainResult, each_prompt
from genq.core.data.audio import AudioSet, load_audio, segments, write_wav
from genq.core.eval.audio import audio_metrics, reference_pitches
from genq.core.nets.wavenet import WaveNet, WaveNetConfig, mu_law_encode
from genq.core.recipes import _media
from genq.jobs.params import validate_train_params

KIND = "wavenet"
EVAL_CLIPS = 8  # one-second clips generated per evaluation
EVAL_SECONDS = 1.0
VAL_FRACTION = 0.1


def train(params: dict[str, Any], data: DataSource, workdir: Path, hooks: Hooks, device: str) -> TrainResult:
    """Train (or resume) a WaveNet on an audio dataset; finish with WAV samples and eval metrics."""
    p = validate_train_params(KIND, params)
    ckpt = checkpoint.load_latest(workdir, KIND)
    rate = ckpt.config["sample_rate"] if ckpt is not None else p["sample_rate"]
    audio = load_audio(data, rate, KIND)
    if p["conditional"] and audio.labels is None:
        raise DataError("a conditional wavenet needs labelled audio: put the WAV files in one sub-folder per label")
    fit, val = _split(audio)
    if sum(len(c) for c in fit.clips) < 2:
        raise DataError("the audio is too short to train on")
    n_classes = len(audio.classes) if p["conditional"] else 0
    config = ckpt.config if ckpt is not None else asdict(WaveNetConfig(
        n_layers=p["n_layers"], residual_channels=p["residual_channels"], skip_channels=p["residual_channels"],
        n_classes=n_classes, sample_rate=rate))
    if config["n_classes"] != n_classes:
        raise DataError("the dataset no longer matches the checkpoint being resumed (labels changed)")

    torch.manual_seed(p["seed"])
    net = WaveNet(WaveNetConfig(**config)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=p["lr"])
    rng = np.random.default_rng(p["seed"])
    start = 0
    if ckpt is not None:
        start = ckpt.restore({"model": net}, {"optimizer": opt})
        rng.bit_generator.state = ckpt.state["batches"]
        hooks.log(f"resumed from the checkpoint at step {start}")
    else:
        seconds = sum(len(c) for c in audio.clips) / rate
        hooks.log(f"wavenet: {len(audio.clips)} clips ({seconds:.1f} s at {rate} Hz), receptive field "
                  f"{net.cfg.receptive_field} samples, {nets.size(net)}")
    pitches = reference_pitches(audio)
    seg = p["segment_length"]

    def step_fn(step: int) -> dict[str, float]:
        x, labels = segments(fit, seg + 1, p["batch_size"], rng)
        label = torch.from_numpy(labels).to(device) if n_classes else None
        loss = net.loss(torch.from_numpy(x).to(device), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return {"loss": loss.item()}

    def eval_fn(step: int) -> dict[str, float]:
        out = {"val/loss": _val_loss(net, val, n_classes, device)}
        clips, _ = _generate(net, EVAL_CLIPS, EVAL_SECONDS, None, torch.Generator().manual_seed(p["seed"] + 1),
                             audio.classes, hooks)
        out.update(audio_metrics(clips, audio, pitches))
        net.train()
        return out

    def save_fn(step: int) -> Path:
        return checkpoint.save(workdir, step, {"model": net}, {
            "kind": KIND, "config": config, "params": p, "classes": audio.classes,
            "optimizer": opt.state_dict(), "batches": rng.bit_generator.state, "rng": checkpoint.rng_state()})

    result = loop.run(step_fn, hooks, max_steps=p["max_steps"], start_step=start, save_fn=save_fn,
                      checkpoint_interval=p["checkpoint_interval"], eval_fn=eval_fn,
                      eval_interval=p["eval_interval"], items_per_step=p["batch_size"] * seg,
                      throughput_metric="throughput/samples_per_s")
    if result.stopped:
        return result
    clips, prompts = _generate(net, EVAL_CLIPS, EVAL_SECONDS, None, torch.Generator().manual_seed(p["seed"] + 2),
                               audio.classes, hooks)
    folder = workdir / "samples"
    result.samples = [Sample(kind="audio", prompt=prompt, path=write_wav(folder / f"clip-{j:03d}.wav", clip, rate))
                      for j, (clip, prompt) in enumerate(zip(clips, prompts))]
    return result


def generate(source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
             hooks: Hooks, device: str) -> list[Sample]:
    """num_samples WAVs of `seconds` seconds per prompt (a label name for a conditional model, or None)."""
    ckpt, g, gen = _media.load_for_generation(KIND, source_workdir, params)
    net = WaveNet(WaveNetConfig(**ckpt.config)).to(device)
    ckpt.load_into({"model": net})
    rate, classes = net.cfg.sample_rate, ckpt.state["classes"]

    def make(i: int, prompt: str | None) -> list[Sample]:
        clips, _ = _generate(net, g["num_samples"], g["seconds"], prompt, gen, classes, hooks)
        return [Sample(kind="audio", prompt=prompt, path=write_wav(out_dir / f"{i:04d}-{j:03d}.wav", clip, rate))
                for j, clip in enumerate(clips)]

    return each_prompt(prompts, hooks, make)


def _generate(net: WaveNet, n: int, seconds: float, prompt: str | None, gen: torch.Generator,
              classes: list[str], hooks: Hooks) -> tuple[list[np.ndarray], list[str | None]]:
    """n clips for a prompt; with no prompt a conditional model cycles through its labels."""
    net.eval()
    label, names = None, [prompt] * n
    if net.cfg.n_classes:
        if prompt is None:
            label = torch.arange(n) % net.cfg.n_classes
            names = [classes[c] for c in label.tolist()]
        else:
            cls = _media.match_class(prompt, classes, {})
            if cls is None:
                raise _media.unknown_class(prompt, classes)
            label = torch.full((n,), cls)
    elif prompt is not None:
        hooks.log(f"this wavenet is unconditional: the prompt {prompt!r} is ignored")
    length = max(1, round(seconds * net.cfg.sample_rate))
    wave = net.generate(n, length, label, generator=gen, stop=hooks.stop_requested)
    return list(wave.numpy()), names


def _split(audio: AudioSet) -> tuple[AudioSet, AudioSet]:
    """(first 90% of every clip, last 10% of every clip): every label is in both parts."""
    cuts = [int(len(c) * (1 - VAL_FRACTION)) for c in audio.clips]
    fit = AudioSet([c[:k] for c, k in zip(audio.clips, cuts)], audio.sample_rate, audio.labels, audio.classes)
    val = AudioSet([c[k:] for c, k in zip(audio.clips, cuts)], audio.sample_rate, audio.labels, audio.classes)
    return fit, val


@torch.no_grad()
def _val_loss(net: WaveNet, val: AudioSet, n_classes: int, device: str, max_len: int = 8192) -> float:
    """Mean next-sample cross-entropy (nats) over (up to 64 of) the validation clips, one at a time."""
    net.eval()
    total, count = 0.0, 0
    for i in sorted(set(np.linspace(0, len(val.clips) - 1, min(len(val.clips), 64)).astype(int).tolist())):
        clip = val.clips[i]
        codes = mu_law_encode(clip[:max_len]).to(device).unsqueeze(0)
        if codes.shape[1] < 2:
            continue
        label = torch.tensor([val.labels[i]], device=device) if n_classes else None
        logits = net(codes[:, :-1], label)
        total += F.cross_entropy(logits, codes[:, 1:], reduction="sum").item()
        count += codes.shape[1] - 1
    return total / max(count, 1)
