"""Audio quality metrics: pitch accuracy against the training set's pitches, and spectral distance."""

from __future__ import annotations

import numpy as np

from genq.core.data.audio import AudioSet

METRIC_DESCRIPTIONS = {
    "eval/pitch_accuracy": "fraction of generated clips whose dominant FFT frequency is within 3% of the "
                           "dominant frequency of some training clip",
    "eval/spectral_distance": "RMS difference in dB between the average power spectra of generated and "
                              "training clips (512-point frames, floored 60 dB below the training peak); "
                              "lower is better",
}
SILENCE_RMS = 1e-3


def dominant_frequency(clip: np.ndarray, sample_rate: int, min_hz: float = 20.0) -> float | None:
    """Frequency (Hz) of the strongest FFT bin above `min_hz` (Hann window); None for silence."""
    clip = np.asarray(clip, dtype=np.float64)
    if len(clip) < 16 or np.sqrt(np.mean(clip**2)) < SILENCE_RMS:
        return None
    spectrum = np.abs(np.fft.rfft((clip - clip.mean()) * np.hanning(len(clip))))
    freqs = np.fft.rfftfreq(len(clip), 1.0 / sample_rate)
    spectrum[freqs < min_hz] = 0
    return float(freqs[int(spectrum.argmax())])


def reference_pitches(audio: AudioSet) -> np.ndarray:
    """The dominant frequencies of the training clips (sorted, silent clips left out)."""
    f = [dominant_frequency(c, audio.sample_rate) for c in audio.clips]
    return np.sort(np.array([x for x in f if x is not None]))


def pitch_accuracy(clips: list[np.ndarray], sample_rate: int, pitches: np.ndarray, tolerance: float = 0.03) -> float:
    """Fraction of clips whose dominant frequency is within `tolerance` (relative) of one of `pitches`."""
    if not clips or len(pitches) == 0:
        return 0.0
    hits = 0
    for clip in clips:
        f = dominant_frequency(clip, sample_rate)
        hits += f is not None and bool(np.any(np.abs(pitches - f) <= tolerance * pitches))
    return hits / len(clips)


def mean_log_spectrum(clips: list[np.ndarray], n_fft: int = 512) -> np.ndarray:
    """Average power spectrum (dB) over all Hann-windowed, half-overlapping frames of the clips."""
    window = np.hanning(n_fft)
    total, count = np.zeros(n_fft // 2 + 1), 0
    for clip in clips:
        clip = np.asarray(clip, dtype=np.float64)
        if len(clip) < n_fft:
            clip = np.pad(clip, (0, n_fft - len(clip)))
        starts = range(0, len(clip) - n_fft + 1, n_fft // 2)
        frames = np.stack([clip[s:s + n_fft] for s in starts]) * window
        total += (np.abs(np.fft.rfft(frames, axis=1)) ** 2).sum(0)
        count += len(frames)
    return 10 * np.log10(total / max(count, 1) + 1e-10)


def spectral_distance(generated: list[np.ndarray], reference: list[np.ndarray], n_fft: int = 512,
                      floor_db: float = 60.0) -> float:
    """RMS difference (dB) between the average log-power spectra of two sets of clips.

    Both spectra are floored at `floor_db` below the reference's peak: differences in bins far below the
    audible content (e.g. the quantisation noise of 8-bit mu-law against a float-perfect silence) would
    otherwise dominate the distance.
    """
    ref = mean_log_spectrum(reference, n_fft)
    floor = ref.max() - floor_db
    diff = np.maximum(mean_log_spectrum(generated, n_fft), floor) - np.maximum(ref, floor)
    return float(np.sqrt(np.mean(diff**2)))


def audio_metrics(generated: list[np.ndarray], data: AudioSet, pitches: np.ndarray | None = None) -> dict[str, float]:
    """eval/pitch_accuracy and eval/spectral_distance of generated clips against the training data."""
    pitches = reference_pitches(data) if pitches is None else pitches
    return {
        "eval/pitch_accuracy": pitch_accuracy(generated, data.sample_rate, pitches),
        "eval/spectral_distance": spectral_distance(generated, data.clips),
    }
