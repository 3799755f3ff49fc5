"""`vae`: a convolutional variational autoencoder on images: samples and reconstructions."""

from __future__ import annotations

from pydantic import Field, field_validator

from genq.core.models._image_params import check_images, check_power_of_two, conv_pair_estimate
from genq.core.spec import ModelSpec, TrainParams


class VAEParams(TrainParams):
    z_dim: int = Field(16, ge=1, le=4096)
    image_size: int | None = Field(None, ge=8, le=256)
    base_channels: int = Field(32, ge=4, le=1024)
    beta: float = Field(1.0, ge=0)
    batch_size: int = Field(64, ge=1, le=4096)
    max_steps: int = Field(2000, ge=1, le=10_000_000)
    eval_interval: int = Field(500, ge=1)
    checkpoint_interval: int = Field(500, ge=1)

    _power_of_two = field_validator("image_size")(check_power_of_two)


TWO_IMAGES = "one is held out for validation"


SPEC = ModelSpec(name="vae", data="images", params=VAEParams, estimate=conv_pair_estimate,
                 recipe="genq.core.models.vae.recipe:VAERecipe", summary=__doc__.split(": ", 1)[1],
                 check_data=lambda p, info: check_images(info, "vae", TWO_IMAGES))
