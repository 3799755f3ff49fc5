"""The `wavenet` recipe: a WaveNet on 16-bit WAV audio (mu-law codes), optionally conditioned on the label.

Training windows are random `segment_length`-sample slices of the first 90% of every clip; the last 10%
of every clip is the validation audio. Adam with a fixed learning rate, gradient clipping at 1.
Metrics: train/loss (nats per audio sample), val/loss, throughput/samples_per_s (audio samples per
second), eval/pitch_accuracy and eval/spectral_distance of one-second generated clips (see
genq.core.eval.audio). Generation is autoregressive from silence, one clip per sample.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genq.core import checkpoint
from genq.core.api import DataError, DataSource, Hooks, Sample, TrainResult, each_prompt
from genq.core.data.audio import AudioSet, load_audio, segments, write_wav
from genq.core.device import to_device
from genq.core.eval.audio import audio_metrics, reference_pitches
from genq.core.models import _media
from genq.core.models.wavenet import NEEDS_LABELS
from genq.core.models.wavenet.net import STOP_EVERY, WaveNet, WaveNetConfig, mu_law_encode
from genq.core.recipe import Recipe

EVAL_CLIPS = 8  # one-second clips generated per evaluation
EVAL_SECONDS = 1.0
GALLERY_CLIPS = 2  # of the evaluation's clips, kept after each evaluation
VAL_FRACTION = 0.1


class WaveNetRecipe(Recipe):
    kind = "wavenet"

    def build(self, data: DataSource, resumed: checkpoint.Checkpoint | None) -> None:
        p = self.p
        rate = resumed.config["sample_rate"] if resumed is not None else p["sample_rate"]
        audio = self.audio = load_audio(data, rate, self.kind)
        if p["conditional"] and audio.labels is None:
            raise DataError(NEEDS_LABELS)
        self.fit_set, self.val = _split(audio)
        if sum(len(c) for c in self.fit_set.clips) < 2 or all(len(c) < 2 for c in self.val.clips):
            raise DataError(f"the audio is too short to train on ({sum(len(c) for c in audio.clips)} samples): the "
                            f"last {VAL_FRACTION:.0%} of each clip is held out for validation, which needs 2 samples "
                            "of one clip or more")
        self.n_classes = len(audio.classes) if p["conditional"] else 0
        self.config = resumed.config if resumed is not None else asdict(WaveNetConfig(
            n_layers=p["n_layers"], residual_channels=p["residual_channels"], skip_channels=p["residual_channels"],
            n_classes=self.n_classes, sample_rate=rate))
        if self.config["n_classes"] != self.n_classes:
            raise DataError("the dataset no longer matches the checkpoint being resumed (labels changed)")
        self.net = WaveNet(WaveNetConfig(**self.config)).to(self.device)
        self.modules = {"model": self.net}
        self.optimizers = {"optimizer": torch.optim.Adam(self.net.parameters(), lr=p["lr"])}
        self.rng = np.random.default_rng(p["seed"])
        self.pitches = reference_pitches(audio)
        self.eval_clips: tuple[int, list[np.ndarray], list[str | None]] | None = None  # (step, clips, prompts)

    def describe(self) -> str:
        audio, rate = self.audio, self.audio.sample_rate
        seconds = sum(len(c) for c in audio.clips) / rate
        return (f"wavenet: {len(audio.clips)} clips ({seconds:.1f} s at {rate} Hz), receptive field "
                f"{self.net.cfg.receptive_field} samples")

    def extra_state(self) -> dict[str, Any]:
        return {"classes": self.audio.classes, "batches": self.rng.bit_generator.state}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["batches"]

    def items_per_step(self) -> int:
        return self.p["batch_size"] * self.p["segment_length"]

    def step(self, step: int) -> dict[str, torch.Tensor]:
        x, labels = segments(self.fit_set, self.p["segment_length"] + 1, self.p["batch_size"], self.rng)
        label = to_device(torch.from_numpy(labels), self.device) if self.n_classes else None
        loss = self.net.loss(to_device(torch.from_numpy(x), self.device), label)
        opt = self.optimizers["optimizer"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        opt.step()
        return {"loss": loss.detach()}

    def evaluate(self, step: int) -> dict[str, float]:
        out = {"val/loss": _val_loss(self.net, self.val, self.n_classes, self.device)}
        clips, _ = self._evaluation_clips(step)
        out.update(audio_metrics(clips, self.audio, self.pitches))
        self.net.train()
        return out

    def gallery(self, step: int, folder: Path) -> list[Sample]:
        """The first clips the evaluation generated at this step (from the same seed at every step): generation
        is autoregressive, and drawing clips of its own would nearly double the evaluation's time."""
        clips, prompts = self._evaluation_clips(step)
        self.net.train()
        rate = self.audio.sample_rate
        return [Sample(kind="audio", prompt=prompt, path=write_wav(folder / f"clip-{j:03d}.wav", clip, rate))
                for j, (clip, prompt) in enumerate(zip(clips[:GALLERY_CLIPS], prompts))]

    def _evaluation_clips(self, step: int) -> tuple[list[np.ndarray], list[str | None]]:
        """The evaluation's clips at `step`, generated once for its metrics and the gallery."""
        if self.eval_clips is None or self.eval_clips[0] != step:
            clips, prompts = _generate(self.net, EVAL_CLIPS, EVAL_SECONDS, None,
                                       torch.Generator().manual_seed(self.p["seed"] + 1), self.audio.classes,
                                       self.hooks)
            self.eval_clips = (step, clips, prompts)
        return self.eval_clips[1], self.eval_clips[2]

    def finish(self, result: TrainResult, folder: Path) -> list[Sample]:
        clips, prompts = _generate(self.net, EVAL_CLIPS, EVAL_SECONDS, None,
                                   torch.Generator().manual_seed(self.p["seed"] + 2), self.audio.classes, self.hooks)
        rate = self.audio.sample_rate
        return [Sample(kind="audio", prompt=prompt, path=write_wav(folder / f"clip-{j:03d}.wav", clip, rate))
                for j, (clip, prompt) in enumerate(zip(clips, prompts))]

    @classmethod
    def generate(cls, source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
                 hooks: Hooks, device: str) -> list[Sample]:
        """num_samples WAVs of `seconds` seconds per prompt (a label name for a conditional model, or None)."""
        (net, classes), g, gen = _media.load_for_generation(cls, source_workdir, params, device)
        rate = net.cfg.sample_rate
        length = _length(g["seconds"], rate)
        if net.cfg.n_classes:
            _media.check_classes(prompts, classes, {})

        def make(i: int, prompt: str | None) -> list[Sample] | None:
            decoded = itertools.count(STOP_EVERY, STOP_EVERY)  # samples per clip at each of the decoder's checks

            def stop() -> str | None:  # progress within a prompt too: a long clip takes minutes on a CPU
                hooks.progress(i * length + next(decoded), len(prompts) * length)
                return hooks.stop_requested()

            clips, _ = _generate(net, g["num_samples"], g["seconds"], prompt, gen, classes, hooks, stop)
            if len(clips[0]) < length:
                return None  # a stop request cut them short
            return [Sample(kind="audio", prompt=prompt, path=write_wav(out_dir / f"{i:04d}-{j:03d}.wav", clip, rate))
                    for j, clip in enumerate(clips)]

        return each_prompt(prompts, hooks, make)

    @classmethod
    def generation_model(cls, ckpt: checkpoint.Checkpoint, device: str) -> tuple[WaveNet, list[str]]:
        """(network in eval mode, its label names)."""
        net = WaveNet(WaveNetConfig(**ckpt.config)).to(device)
        ckpt.load_into({"model": net})
        return net.eval(), ckpt.state["classes"]


def _length(seconds: float, rate: int) -> int:
    """Samples in a clip of `seconds` at `rate`."""
    return max(1, round(seconds * rate))


def _generate(net: WaveNet, n: int, seconds: float, prompt: str | None, gen: torch.Generator,
              classes: list[str], hooks: Hooks, stop=None) -> tuple[list[np.ndarray], list[str | None]]:
    """n clips for a prompt; with no prompt a conditional model cycles through its labels. `stop`: asked every
    STOP_EVERY samples whether to end early (default: hooks.stop_requested)."""
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
    wave = net.generate(n, _length(seconds, net.cfg.sample_rate), label, generator=gen,
                        stop=stop or hooks.stop_requested)
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
