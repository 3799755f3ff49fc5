"""Audio datasets: 16-bit PCM WAV files (one file, a folder or a zip; labels = class folder names), or `tones`.

Decisions: only 16-bit PCM is accepted (8/24/32-bit and float WAVs are refused with a DataError that says
so; the rules are genq.core.data.formats, the upload check's); stereo and multi-channel files are downmixed
to mono by averaging; any sample rate is resampled to the model's `sample_rate` with a polyphase filter
(scipy.signal.resample_poly).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from genq.core.api import DataSource
from genq.core.data.files import open_media, require_kind
from genq.core.data.formats import WavInfo, check_audio_seconds, wav_frames


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


def read_wav(raw: bytes, name: str = "the file") -> tuple[np.ndarray, int]:
    """Decode a 16-bit PCM WAV to mono float32 in [-1, 1]; return (samples, sample_rate)."""
    info, data = wav_frames(io.BytesIO(raw), name)
    return _mono(info, data), info.sample_rate


def _mono(info: WavInfo, data: bytes) -> np.ndarray:
    frame = 2 * info.channels
    x = np.frombuffer(data[: len(data) - len(data) % frame], dtype="<i2").astype(np.float32) / 32768.0
    return x.reshape(-1, info.channels).mean(axis=1) if info.channels > 1 else x  # downmix to mono


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
    clips, seconds = [], 0.0
    with open_media(Path(data.path), "audio") as media:
        for file in media.files:
            info, frames = wav_frames(io.BytesIO(media.read(file)), file.what)
            seconds += info.seconds
            check_audio_seconds(seconds)
            clips.append(resample(_mono(info, frames), info.sample_rate, sample_rate))
        return AudioSet(clips, sample_rate, media.labels, media.classes)


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
