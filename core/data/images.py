"""Image datasets: one PNG/JPEG, or a folder or a zip of them (labels = class folder names), or the built-in
`digits`. Files are typed, checked and labelled by genq.core.data.formats, as at upload.

Zip members are read in memory and their names are only used to find labels, never as paths on disk.
Every image is center-cropped to a square and resized to `image_size` (a power of two, so the
convolutional nets can halve it down to 4x4).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genq.core.api import DataError, DataSource
from genq.core.data.files import open_media, require_kind
from genq.core.data.formats import image_header, load_image

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


@dataclass
class ImageSet:
    """Images as a uint8 tensor (N, C, H, W) with optional integer labels and the names of the classes."""

    images: torch.Tensor  # (N, C, H, W) uint8, C is 1 (grayscale) or 3 (RGB)
    labels: torch.Tensor | None = None  # (N,) int64 class ids, None when the data has no classes
    classes: list[str] = field(default_factory=list)  # class id -> name
    synonyms: dict[int, list[str]] = field(default_factory=dict)  # class id -> other names ("seven")

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def floats(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """The images (or a subset) as float32 in [0, 1]."""
        x = self.images if index is None else self.images[index]
        return x.float() / 255.0

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """A deterministic (train, validation) split."""
        n = len(self.images)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(n * val_fraction)) if n > 1 else 0
        parts = []
        for idx in (perm[n_val:], perm[:n_val]):
            labels = None if self.labels is None else self.labels[idx]
            parts.append(ImageSet(self.images[idx], labels, self.classes, self.synonyms))
        return parts[0], parts[1]


def check_image_size(size: int) -> int:
    """Return `size` if the nets can use it (a power of two, 8..256), else raise DataError."""
    if size < 8 or size > 256 or size & (size - 1):
        raise DataError(f"image_size must be a power of two between 8 and 256, got {size}")
    return size


def load_images(data: DataSource, image_size: int | None = None, model: str = "this model") -> ImageSet:
    """Load an images dataset (built-in, folder or zip), resized to `image_size` (default: from the data)."""
    require_kind(data, "images", model)
    if data.builtin:
        from genq.core.data.builtin_media import digits

        return digits(check_image_size(image_size or 16))
    # Pass 1 reads and checks each file's header as the upload check does; pass 2 decodes and shrinks one
    # image at a time, so memory holds the compressed files plus the small resized arrays, never every
    # full-size bitmap.
    with open_media(Path(data.path), "images") as media:
        files = [(file.what, media.read(file)) for file in media.files]
        labels, classes = media.labels, media.classes
    headers = [image_header(io.BytesIO(raw), what) for what, raw in files]
    mode = "L" if all(h.mode in GRAY_MODES for h in headers) else "RGB"  # grayscale unless some has colour
    if image_size is None:
        # The largest power of two not above the median short side, kept within 8..64 for CPU budgets.
        side = int(np.median([min(h.width, h.height) for h in headers]))
        image_size = int(min(64, max(8, 2 ** int(np.log2(max(side, 1))))))
    check_image_size(image_size)
    arrays = [np.asarray(_square(load_image(io.BytesIO(raw), mode, what), image_size)) for what, raw in files]
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2)
    return ImageSet(x.contiguous(), None if labels is None else torch.tensor(labels, dtype=torch.int64), classes)


def _square(im: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square, then resize to size x size."""
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)


def save_png(image: torch.Tensor, path: Path, scale: int = 1) -> Path:
    """Write one image (C, H, W) float in [0, 1] as a PNG, optionally enlarged `scale` times (nearest)."""
    arr = (image.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")
    return path


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, scale: int = 4) -> Path:
    """Write a batch (N, C, H, W) float in [0, 1] as one PNG grid with a 1-pixel gap."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = (n + ncol - 1) // ncol
    grid = torch.ones(c, rows * (h + 1) + 1, ncol * (w + 1) + 1) * 0.5
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = images[i]
    return save_png(grid, path, scale)
