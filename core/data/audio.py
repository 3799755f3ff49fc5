"""Audio datasets: 16-bit PCM WAV files (one file, a folder or a zip; labels = sub-folder names), or `tones`.

Decisions: only 16-bit PCM is accepted (8/24/32-bit and float WAVs are refused with a DataError that says
so); stereo and multi-channel files are downmixed to mono by averaging; any sample rate is resampled to
the model's `sample_rate` with a polyphase filter (scipy.signal.resample_poly).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from genq.core.api import DataError, DataSource
from genq.core.data.files import class_labels, iter_files, require_kind

MAX_FILE_BYTES = 200 * 2**20
MAX_TOTAL_SECONDS = 4 * 3600


@dataclass
class AudioSet:
    """Mono clips as float32 arrays in [-1, 1] at one sample rate, with optional labels."""

    clips: list[np.ndarray]
    sample_rate: int
    labels: list[int] | None = None  # clip -> class id
    classes: list[str] = field(default_factory=list)

    def label_of(self, name: str) -> int | None:
        """The class id whose name matches `name` (case and spaces ignored), or None."""
        key = name.strip().lower()
        for i, c in enumerate(self.classes):
            if c.lower() == key:
                return i
        return None


def read_wav(raw: bytes, name: str = "audio") -> tuple[np.ndarray, int]:
    """Decode a 16-bit PCM WAV to mono float32 in [-1, 1]; return (samples, sample_rate)."""
    try:
        with wave.open(io.BytesIO(raw), "rb") as w:
            width, channels, rate, frames = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            data = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise DataError(f"{name} is not a PCM WAV file ({exc})") from None
    if width != 2:
        raise DataError(f"{name} is {8 * width}-bit; only 16-bit PCM WAV files are supported")
    x = np.frombuffer(data[: len(data) - len(data) % (2 * channels)], dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)  # downmix to mono
    if x.size == 0:
        raise DataError(f"{name} holds no audio samples")
    return x, rate


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples in [-1, 1] as a 16-bit PCM WAV."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1, 1) * 32767).round().astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample `x` from `rate` to `target` Hz (polyphase, anti-aliased)."""
    if rate == target:
        return x
    g = gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def load_audio(data: DataSource, sample_rate: int, model: str = "this model") -> AudioSet:
    """Load an audio dataset (built-in, WAV, folder or zip of WAVs) as mono clips at `sample_rate`."""
    require_kind(data, "audio", model)
    if data.builtin:
        from genq.core.data.builtin_media import tones

        return tones(sample_rate)
    clips, names = [], []
    total = 0
    for rel, raw in iter_files(Path(data.path), {".wav"}, MAX_FILE_BYTES):
        x, rate = read_wav(raw, str(rel))
        x = resample(x, rate, sample_rate)
        total += len(x)
        if total > MAX_TOTAL_SECONDS * sample_rate:
            raise DataError(f"the dataset holds more than {MAX_TOTAL_SECONDS // 3600} hours of audio")
        clips.append(x)
        names.append(rel)
    if not clips:
        raise DataError("the dataset holds no WAV files")
    labels, classes = class_labels(names, "WAV files")
    return AudioSet(clips, sample_rate, labels, classes)


def segments(audio: AudioSet, length: int, batch_size: int, rng: np.random.Generator,
             start_prob: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Random windows (batch, length) from the clips (zero-padded when short) and their clip labels.

    With probability `start_prob` a window starts at the clip's first sample, so the model also learns
    how a sound begins from silence (generation starts from silence).
    """
    out = np.zeros((batch_size, length), dtype=np.float32)
    idx = rng.integers(len(audio.clips), size=batch_size)
    for b, i in enumerate(idx):
        clip = audio.clips[i]
        start = 0 if len(clip) <= length or rng.random() < start_prob else int(rng.integers(len(clip) - length + 1))
        piece = clip[start:start + length]
        out[b, : len(piece)] = piece
    labels = np.array([audio.labels[i] for i in idx] if audio.labels else np.zeros(batch_size), dtype=np.int64)
    return out, labels
