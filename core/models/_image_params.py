"""What the image models (dcgan, vae) share before torch: the image-size rule and the memory estimate."""

from __future__ import annotations

from typing import Any

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
