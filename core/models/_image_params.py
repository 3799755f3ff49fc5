"""What the image models (dcgan, vae) share before torch: the image-size rule and the memory estimate."""

from __future__ import annotations

from typing import Any

from genq.core.errors import DataError
from genq.core.spec import FLOAT

DEFAULT_IMAGE_SIZE = 32  # the estimate's guess when the dataset decides the size


def check_power_of_two(v: int | None) -> int | None:
    """The image nets halve the side down to 4x4: refuse other sizes."""
    if v is not None and v & (v - 1):
        raise ValueError(f"image_size must be a power of two (8, 16, 32, 64, 128 or 256), got {v}")
    return v


def conv_pair_estimate(p: dict[str, Any]) -> tuple[int, int]:
    """(parameters, activation bytes) of a generator/decoder and discriminator/encoder pair of 4x4 convs
    with channels c..8c."""
    c, z, B = p["base_channels"], p["z_dim"], p["batch_size"]
    s = p.get("image_size") or DEFAULT_IMAGE_SIZE
    params = 16 * (84 * c * c + 8 * c * z)
    acts = 2 * 2 * B * s * s * c * 5 * FLOAT  # two nets, forward + backward, ~5 feature maps of s*s*c
    return params, acts


def check_images(info: dict[str, Any], kind: str, why: str, labelled: bool = False) -> None:
    """DataError unless images data of `info` (an upload's: "images", "classes") holds 2 images or more, and
    classes if `labelled`: a submission checks its dataset's, the recipe what it loaded."""
    if info.get("images", 2) < 2:
        raise DataError(f"a {kind} needs at least 2 images ({why})")
    if labelled and not info.get("classes"):
        raise DataError(f"a conditional {kind} needs labelled images: put the images in one sub-folder per class")
