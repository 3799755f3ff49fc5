"""Image datasets: zips and folders of PNG/JPEG with class folders, the built-in digits, bad input."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from genq.core.api import DataError, DataSource
from genq.core.data.builtin_media import digits
from genq.core.data.images import load_images, save_grid, save_png


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def make_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return DataSource(kind="images", path=path)


@pytest.fixture
def class_zip(tmp_path):
    rng = np.random.default_rng(0)
    members = {}
    for cls, value in (("cat", 40), ("dog", 200)):
        for i in range(3):
            noise = rng.integers(0, 5, (20, 30), dtype=np.uint8)
            members[f"pets/{cls}/{i}.png"] = png_bytes(np.full((20, 30), value, np.uint8) + noise)
    members["pets/.DS_Store"] = b"hidden, skipped"
    members["__MACOSX/pets/cat/._0.png"] = b"resource fork junk, skipped"
    return make_zip(tmp_path / "pets.zip", members)


def test_zip_with_class_folders_gives_labels_and_resized_grayscale(class_zip):
    ds = load_images(class_zip, image_size=16)
    assert ds.images.shape == (6, 1, 16, 16) and ds.images.dtype == torch.uint8
    assert ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    means = ds.floats().mean(dim=(1, 2, 3))
    assert means[:3].max() < 0.2 and means[3:].min() > 0.7  # the pixels came through, per class


def test_rgb_folder_without_classes_is_unlabelled_and_default_size_from_data(tmp_path):
    for i in range(4):
        arr = np.zeros((40, 40, 3), np.uint8)
        arr[..., i % 3] = 255
        (tmp_path / f"{i}.jpg").write_bytes(png_bytes(arr, "JPEG"))
    ds = load_images(DataSource(kind="images", path=tmp_path))
    assert ds.labels is None and ds.classes == []
    assert ds.images.shape == (4, 3, 32, 32)  # largest power of two <= 40
    assert ds.images[0, 0].float().mean() > 200 and ds.images[0, 1].float().mean() < 50  # red stays red


def test_digit_class_folders_sort_numerically(tmp_path):
    members = {f"{c}/a.png": png_bytes(np.full((8, 8), c * 10, np.uint8)) for c in (0, 2, 10)}
    ds = load_images(make_zip(tmp_path / "d.zip", members), 8)
    assert ds.classes == ["0", "2", "10"]


@pytest.mark.parametrize("members, message", [
    ({".DS_Store": b"junk"}, "the zip archive holds no files"),
    ({"a/x.png": b"this is not a png"}, "zip member 'a/x.png' is not a PNG/JPEG image or a WAV file"),
    ({"a/x.png": png_bytes(np.zeros((8, 8), np.uint8))[:-10]},
     "zip member 'a/x.png' looks like an image but cannot be read: truncated PNG file"),
    ({"a/x.png": png_bytes(np.zeros((8, 8), np.uint8)), "a/README.txt": b"notes"},
     "zip member 'a/README.txt' is not a PNG/JPEG image"),
    ({"a/x.png": png_bytes(np.zeros((8, 8), np.uint8)), "y.png": png_bytes(np.zeros((8, 8), np.uint8))},
     "outside the class folders"),
])
def test_bad_zips_raise_data_error_naming_the_problem(tmp_path, members, message):
    with pytest.raises(DataError, match=message):
        load_images(make_zip(tmp_path / "bad.zip", members), 8)


def test_not_a_zip_and_wrong_kind_and_bad_size(tmp_path):
    junk = tmp_path / "data.bin"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="not a PNG/JPEG image, a WAV file or a zip archive"):
        load_images(DataSource(kind="images", path=junk))
    with pytest.raises(DataError, match="needs an images dataset, got a audio"):
        load_images(DataSource(kind="audio", path=junk), model="dcgan")
    with pytest.raises(DataError, match="built-in 'tones' is audio"):
        load_images(DataSource(kind="audio", builtin="tones"), model="vae")
    with pytest.raises(DataError, match="power of two"):
        load_images(DataSource(kind="images", builtin="digits"), image_size=12)


def test_builtin_digits():
    ds = digits(16)
    assert ds.images.shape == (1797, 1, 16, 16)
    assert ds.classes == [str(i) for i in range(10)] and ds.synonyms[7] == ["seven"]
    assert sorted(ds.labels.unique().tolist()) == list(range(10))
    small = load_images(DataSource(kind="images", builtin="digits"), image_size=8)
    assert small.images.shape[-1] == 8 and small.images.max() == 255
    fit, val = ds.split(0.1, seed=0)
    assert len(fit.images) + len(val.images) == 1797 and len(val.images) == 179
    assert torch.equal(ds.split(0.1, seed=0)[1].labels, val.labels)  # deterministic


def test_png_writers_round_trip(tmp_path):
    img = torch.rand(1, 8, 8)
    path = save_png(img, tmp_path / "one.png", scale=4)
    with Image.open(path) as im:
        assert im.size == (32, 32)
        back = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255)[::4, ::4]
    assert (back - img[0]).abs().max() <= 1 / 255 + 1e-6
    grid = save_grid(torch.rand(10, 3, 8, 8), tmp_path / "grid.png", nrow=4, scale=1)
    with Image.open(grid) as im:
        assert im.size == (4 * 9 + 1, 3 * 9 + 1) and im.mode == "RGB"
