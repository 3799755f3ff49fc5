"""The built-in media datasets, offline and deterministic: `digits` (images) and `tones` (audio).

digits: scikit-learn's 1,797 8x8 handwritten digits (shipped with the package). They are upsampled
bicubically to 16x16 by default: the nets then have two stride-2 stages (4 -> 8 -> 16), which both the
generator and the discriminator need to learn strokes, and the samples are less blocky to look at.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genq.core.data.audio import AudioSet
from genq.core.data.images import ImageSet
from genq.core.errors import DataError

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Eight notes from A3 to A5 (Hz); neighbours differ by >= 12%, so a 3% pitch tolerance is unambiguous.
TONE_NOTES = {"A3": 220.0, "C4": 261.63, "E4": 329.63, "G4": 392.0,
              "A4": 440.0, "C5": 523.25, "E5": 659.26, "A5": 880.0}


def digits(image_size: int = 16) -> ImageSet:
    """scikit-learn's handwritten digits as an ImageSet (1 channel, labels 0-9, word synonyms)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    synonyms = {i: [w] for i, w in enumerate(DIGIT_WORDS)}
    return ImageSet(images, labels, [str(i) for i in range(10)], synonyms)


def tone(freq: float, sample_rate: int, seconds: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """One harmonic tone: a fundamental with two weaker overtones, a short attack and a gentle decay."""
    rng = rng or np.random.default_rng(0)
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    phase = rng.uniform(0, 2 * np.pi)
    h2, h3 = rng.uniform(0.15, 0.35), rng.uniform(0.05, 0.15)
    wave = (np.sin(2 * np.pi * freq * t + phase) + h2 * np.sin(4 * np.pi * freq * t + 2 * phase)
            + h3 * np.sin(6 * np.pi * freq * t + 3 * phase)) / (1 + h2 + h3)
    attack = np.minimum(1.0, t / 0.01)  # 10 ms
    decay = np.exp(-t * rng.uniform(0.3, 1.0))
    amp = rng.uniform(0.5, 0.8)
    return (amp * attack * decay * wave).astype(np.float32)


def tones(sample_rate: int = 8000, clips_per_note: int = 8, seconds: float = 1.0) -> AudioSet:
    """The `tones` dataset: `clips_per_note` one-second clips per note below Nyquist, labelled by note name."""
    # A note at or above half the sample rate cannot be sampled, so it is no class at this rate.
    notes = {name: freq for name, freq in TONE_NOTES.items() if freq < sample_rate / 2}
    if not notes:
        lowest = min(TONE_NOTES.values())
        raise DataError(f"a sample rate of {sample_rate} Hz is too low for the tones dataset: its lowest note "
                        f"({lowest:g} Hz) needs a sample rate above {2 * lowest:g} Hz")
    rng = np.random.default_rng(1234)
    clips, labels = [], []
    for label, freq in enumerate(notes.values()):
        for _ in range(clips_per_note):
            clips.append(tone(freq, sample_rate, seconds, rng))
            labels.append(label)
    return AudioSet(clips, sample_rate, labels, list(notes))
