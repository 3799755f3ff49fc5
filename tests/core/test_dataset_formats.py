"""One verdict on the same bytes: what the upload check (genq.datasets) accepts, the training loaders load,
with the same kind, count and classes; what one refuses, the other refuses with the same message."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from genq.core.api import DataError, DataSource
from genq.core.data import formats
from genq.core.data.audio import load_audio
from genq.core.data.images import load_images
from genq.datasets import detect_kind
from genq.errors import InvalidInput
from tests.web.conftest import png, wav, zipped


def at_upload(path) -> tuple:
    """("images" | "audio", count, classes), or ("refused", message), as the upload check answers."""
    try:
        found = detect_kind(path, path.name)
    except InvalidInput as exc:
        return "refused", exc.message
    count = found.info.get("images", found.info.get("clips"))
    return found.kind, count, found.info.get("classes", [])


def at_training(path, kind: str) -> tuple:
    """The same answer from the loader of `kind`, as the worker would call it on the stored file."""
    try:
        if kind == "images":
            ds = load_images(DataSource(kind="images", path=path), 8)
            return "images", len(ds.images), ds.classes
        audio = load_audio(DataSource(kind="audio", path=path), 8000)
        return "audio", len(audio.clips), audio.classes
    except DataError as exc:
        return "refused", str(exc)


def same_verdict(tmp_path, name: str, data: bytes, kind: str) -> tuple:
    path = tmp_path / name
    path.write_bytes(data)
    uploaded = at_upload(path)
    assert uploaded == at_training(path, uploaded[0] if uploaded[0] != "refused" else kind)
    return uploaded


@pytest.mark.parametrize("width", [1, 3])
def test_wav_that_is_not_16_bit_is_refused_by_both_naming_the_width(tmp_path, width):
    bits = f"{8 * width}-bit; only 16-bit PCM WAV files are supported"
    verdict = same_verdict(tmp_path, "clip.wav", wav(width=width), "audio")
    assert verdict == ("refused", f"the file is {bits}")
    verdict = same_verdict(tmp_path, "clips.zip", zipped({"low/a.wav": wav(), "high/b.wav": wav(width=width)}),
                           "audio")
    assert verdict == ("refused", f"zip member 'high/b.wav' is {bits}")


def test_a_wav_cut_short_counts_the_frames_it_holds_not_those_its_header_says():
    whole = wav(seconds=1.0)  # 8,000 frames
    assert formats.wav_info(io.BytesIO(whole)).frames == 8000
    cut = formats.wav_info(io.BytesIO(whole[:60]))  # the 44-byte header and 8 frames
    assert (cut.frames, cut.seconds) == (8, 0.001)
    assert formats.wav_frames(io.BytesIO(whole[:60]))[0] == cut


@pytest.mark.parametrize("members, kind, expected", [
    # typed by magic bytes, never by the name
    ({"cats/a.bin": png(), "dogs/b.png": png()}, "images", ("images", 2, ["cats", "dogs"])),
    ({"x.png": wav(), "y.dat": wav()}, "audio", ("audio", 2, [])),
    ({"cats/a.png": png(), "dogs/b.png": b"just some text"}, "images",
     ("refused", "zip member 'dogs/b.png' is not a PNG/JPEG image or a WAV file")),
    ({"a.png": png(), "b.png": wav()}, "images",
     ("refused", "the zip archive mixes images and audio; upload one kind per dataset")),
    # hidden files and macOS resource forks are skipped by both
    ({"cats/a.png": png(), "cats/.DS_Store": b"junk", "__MACOSX/cats/._a.png": b"junk", "dogs/b.jpg": png(fmt="JPEG")},
     "images", ("images", 2, ["cats", "dogs"])),
    ({"../evil.png": png()}, "images", ("refused", "zip member '../evil.png' has an unsafe path")),
    ({"cats/a.png": png()[:-10], "dogs/b.png": png()}, "images",
     ("refused", "zip member 'cats/a.png' looks like an image but cannot be read: truncated PNG file")),
    ({"a.wav": wav()[:40]}, "audio", ("refused", "zip member 'a.wav' is not a readable PCM WAV file: "
                                                 "fmt chunk and/or data chunk missing")),
])
def test_zip_members_get_one_verdict(tmp_path, members, kind, expected):
    assert same_verdict(tmp_path, "data.zip", zipped(members), kind) == expected


def test_truncated_jpeg_is_refused_by_both(tmp_path):
    # JPEG has no checksums: the upload check decodes it (as training does) to find the missing data.
    noise = Image.frombytes("L", (64, 64), np.random.default_rng(0).bytes(64 * 64))
    jpeg = io.BytesIO()
    noise.save(jpeg, format="JPEG")
    verdict = same_verdict(tmp_path, "data.zip", zipped({"cats/a.jpg": jpeg.getvalue()[:-400], "dogs/b.png": png()}),
                           "images")
    assert verdict[1].startswith("zip member 'cats/a.jpg' looks like an image but cannot be read: image file is "
                                 "truncated")


def test_single_files_are_typed_by_their_bytes(tmp_path):
    assert same_verdict(tmp_path, "photo.dat", png(), "images") == ("images", 1, [])
    assert same_verdict(tmp_path, "tone.png", wav(), "audio") == ("audio", 1, [])


@pytest.mark.parametrize("members, expected", [
    # one shared top folder (a zipped folder) is not a class; numbers sort numerically, then names
    ({"pets/10/a.png": png(), "pets/2/b.png": png(), "pets/dog/c.png": png(), "pets/cat/d.png": png()},
     ("images", 4, ["2", "10", "cat", "dog"])),
    ({"pets/a.png": png(), "pets/b.png": png()}, ("images", 2, [])),
    ({"train/cat/a.png": png(), "test/dog/b.png": png()}, ("images", 2, ["cat", "dog"])),  # labels = parent
    ({"cat/a.png": png(), "b.png": png()},
     ("refused", "'b.png' sits outside the class folders; put every file in a class folder")),
    ({"pets/cat/a.png": png(), "pets/b.png": png()},
     ("refused", "'pets/b.png' sits outside the class folders; put every file in a class folder")),
    ({"notes/low/a.wav": wav(), "notes/high/b.wav": wav(), "notes/low/c.wav": wav()}, ("audio", 3, ["high", "low"])),
])
def test_class_folders_give_the_same_classes_in_the_same_order(tmp_path, members, expected):
    kind = "audio" if expected[0] == "audio" else "images"
    assert same_verdict(tmp_path, "data.zip", zipped(members), kind) == expected


def test_size_and_count_limits_apply_at_both(tmp_path, monkeypatch):
    # Small limits stand in for the real ones (20 MiB an image, 100,000 images, 4 hours of audio).
    monkeypatch.setitem(formats.MAX_FILE_BYTES, "images", 2**20)
    noise = Image.frombytes("L", (1100, 1100), np.random.default_rng(0).bytes(1100 * 1100))
    big = io.BytesIO()
    noise.save(big, format="PNG")
    assert same_verdict(tmp_path, "big.zip", zipped({"a.png": png(), "b.png": big.getvalue()}), "images") == (
        "refused", "zip member 'b.png' is larger than 1 MiB (the most for one image)")
    monkeypatch.setattr(formats, "MAX_IMAGES", 2)
    assert same_verdict(tmp_path, "many.zip", zipped({f"{i}.png": png() for i in range(3)}), "images") == (
        "refused", "the zip archive holds 3 images (at most 2)")
    monkeypatch.setattr(formats, "MAX_AUDIO_SECONDS", 0.09)
    assert same_verdict(tmp_path, "long.zip", zipped({"a.wav": wav(), "b.wav": wav()}), "audio")[0] == "refused"
