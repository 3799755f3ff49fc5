"""Audio datasets: 16-bit WAV files, zips with label folders, the built-in tones, bad input."""

from __future__ import annotations

import io
import wave
import zipfile

import numpy as np
import pytest

from genq.core.api import DataError, DataSource
from genq.core.data.audio import load_audio, read_wav, segments, write_wav
from genq.core.data.builtin_media import TONE_NOTES, tones
from genq.core.eval.audio import dominant_frequency
from tests.web.conftest import png, zipped


def wav_bytes(samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        else:
            w.writeframes(((np.clip(samples, -1, 1) + 1) * 127).astype(np.uint8).tobytes())
    return buf.getvalue()


def sine(freq: float, rate: int, seconds: float = 0.5) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def test_wav_zip_with_label_folders_is_resampled(tmp_path):
    path = tmp_path / "notes.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("low/a.wav", wav_bytes(sine(220, 16000), 16000))
        zf.writestr("low/b.wav", wav_bytes(sine(220, 8000), 8000))
        zf.writestr("high/c.wav", wav_bytes(sine(660, 16000), 16000))
        zf.writestr("__MACOSX/low/._a.wav", b"resource fork junk, skipped")
    audio = load_audio(DataSource(kind="audio", path=path), sample_rate=8000)
    assert audio.classes == ["high", "low"] and audio.labels == [0, 1, 1]  # files in name order
    assert [len(c) for c in audio.clips] == [4000, 4000, 4000]  # 0.5 s each at 8 kHz
    assert [round(dominant_frequency(c, 8000)) for c in audio.clips] == [660, 220, 220]


def test_single_stereo_wav_is_downmixed(tmp_path):
    left_right = np.stack([sine(440, 8000), sine(440, 8000)], axis=1).reshape(-1)
    path = tmp_path / "stereo.wav"
    path.write_bytes(wav_bytes(left_right, 8000, channels=2))
    audio = load_audio(DataSource(kind="audio", path=path), 8000)
    assert audio.labels is None and len(audio.clips) == 1 and len(audio.clips[0]) == 4000
    assert np.allclose(audio.clips[0], sine(440, 8000), atol=1e-3)


def test_write_then_read_round_trip(tmp_path):
    x = sine(300, 8000).astype(np.float32)
    y, rate = read_wav(write_wav(tmp_path / "x.wav", x, 8000).read_bytes())
    assert rate == 8000 and np.abs(x - y).max() < 1e-4


@pytest.mark.parametrize("raw, message", [
    (wav_bytes(sine(440, 8000), 8000, width=1), "the file is 8-bit; only 16-bit PCM"),
    (wav_bytes(sine(440, 8000), 8000, width=3), "the file is 24-bit; only 16-bit PCM"),
    (b"ID3\x03 an mp3 file, not a wav", "not a PNG/JPEG image, a WAV file or a zip archive"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt junk", "not a readable PCM WAV file"),
    (wav_bytes(np.zeros(0), 8000), "no audio samples"),
])
def test_unsupported_files_raise_data_error(tmp_path, raw, message):
    path = tmp_path / "clip.wav"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message):
        load_audio(DataSource(kind="audio", path=path), 8000)


def test_zip_without_wavs_and_wrong_kind(tmp_path):
    path = tmp_path / "readme.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.md", b"no audio here")
    with pytest.raises(DataError, match="zip member 'readme.md' is not a PNG/JPEG image or a WAV file"):
        load_audio(DataSource(kind="audio", path=path), 8000)
    images = tmp_path / "images.zip"
    images.write_bytes(zipped({"a.png": png()}))
    with pytest.raises(DataError, match="the dataset holds images, not audio"):
        load_audio(DataSource(kind="audio", path=images), 8000)
    with pytest.raises(DataError, match="needs an audio dataset, got a images"):
        load_audio(DataSource(kind="images", path=path), 8000, model="wavenet")
    with pytest.raises(DataError, match="built-in 'digits' is images"):
        load_audio(DataSource(kind="images", builtin="digits"), 8000, model="wavenet")


def test_builtin_tones_are_deterministic_labelled_notes():
    a, b = tones(8000), tones(8000)
    assert a.classes == list(TONE_NOTES) and len(a.clips) == 8 * len(TONE_NOTES)
    assert all(np.array_equal(x, y) for x, y in zip(a.clips, b.clips))
    freqs = list(TONE_NOTES.values())
    for clip, label in zip(a.clips, a.labels):
        assert len(clip) == 8000 and np.abs(clip).max() <= 1
        assert abs(dominant_frequency(clip, 8000) - freqs[label]) <= 0.01 * freqs[label]
    assert len(tones(1000).clips) < len(a.clips)  # notes above Nyquist are left out


def test_builtin_tones_name_only_the_notes_below_nyquist():
    low = tones(1000, clips_per_note=1)  # Nyquist 500 Hz: A3 to A4 fit, C5 to A5 do not
    assert low.classes == ["A3", "C4", "E4", "G4", "A4"]
    assert low.labels == list(range(5))  # every class has its clip, and every label names a class
    for clip, label in zip(low.clips, low.labels):
        freq = TONE_NOTES[low.classes[label]]
        assert abs(dominant_frequency(clip, 1000) - freq) <= 0.01 * freq
    with pytest.raises(DataError, match="sample rate of 400 Hz is too low for the tones dataset"):
        tones(400)


def test_segments_are_windows_of_the_clips():
    audio = tones(8000, clips_per_note=1)
    x, labels = segments(audio, 256, 16, np.random.default_rng(0))
    assert x.shape == (16, 256) and labels.shape == (16,)
    for row, label in zip(x, labels):
        clip = audio.clips[label]  # one clip per note: the label names the clip
        windows = np.lib.stride_tricks.sliding_window_view(clip, 256)
        assert (windows == row).all(axis=1).any()


def extensible_wav(samples: np.ndarray, rate: int, subformat: int = 1) -> bytes:
    """A mono 16-bit WAV with a WAVE_FORMAT_EXTENSIBLE header (as many recorders and converters write), a JUNK
    chunk before its fmt chunk; `subformat` 1 is PCM, 3 IEEE float."""
    import struct

    pcm = (samples * 32767).astype("<i2").tobytes()
    guid = struct.pack("<H", subformat) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, rate, 2 * rate, 2, 16, 22, 16, 4) + guid
    chunks = (b"JUNK" + struct.pack("<I", 3) + b"abc\x00" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
              + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_a_wave_format_extensible_header_of_pcm_samples_reads_as_plain_pcm(tmp_path):
    tone = sine(440, 8000, 0.1)
    samples, rate = read_wav(extensible_wav(tone, 8000))
    assert rate == 8000 and np.allclose(samples, tone, atol=1e-4)
    (tmp_path / "clip.wav").write_bytes(extensible_wav(tone, 8000))  # and loads as a dataset
    assert len(load_audio(DataSource(kind="audio", path=tmp_path / "clip.wav"), 8000, "wavenet").clips[0]) == 800
    with pytest.raises(DataError, match="a WAVE_FORMAT_EXTENSIBLE file of float or compressed samples"):
        read_wav(extensible_wav(tone, 8000, subformat=3))
