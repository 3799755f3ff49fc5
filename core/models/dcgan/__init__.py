"""`dcgan`: a DCGAN on images, unconditional or conditioned on a class or a short text prompt."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from genq.core.models._image_params import check_images, check_power_of_two, conv_pair_estimate
from genq.core.spec import ModelSpec, TrainParams


class DCGANParams(TrainParams):
    z_dim: int = Field(64, ge=1, le=4096)
    # none: unconditional; class: a label id; prompt: a short text ("7", "seven", "a handwritten seven")
    conditional: Literal["none", "class", "prompt"] = "none"  # true and false stand for "prompt" and "none"
    image_size: int | None = Field(None, ge=8, le=256)  # default: the dataset's own (digits: 8, upsampled to 16)
    base_channels: int = Field(32, ge=4, le=1024)  # 32: digits reach ~99% class accuracy in ~2000 CPU steps
    batch_size: int = Field(64, ge=2, le=4096)  # the generator's BatchNorm cannot train on one image
    lr: float = Field(2e-4, gt=0, le=10)
    max_steps: int = Field(2000, ge=1, le=10_000_000)
    eval_interval: int = Field(500, ge=1)
    checkpoint_interval: int = Field(500, ge=1)

    @field_validator("conditional", mode="before")
    @classmethod
    def _normalise(cls, v: object) -> object:
        # before the type check: a union with bool named its branches in the error ('conditional.bool')
        return {True: "prompt", False: "none"}[v] if isinstance(v, bool) else v

    _power_of_two = field_validator("image_size")(check_power_of_two)


TWO_IMAGES = "its evaluation compares their spread with the samples'"  # one has no covariance: a NaN FID


def check_data(p: dict[str, Any], info: dict[str, Any]) -> None:
    """Refuse one image, and unlabelled images for a conditional dcgan."""
    check_images(info, "dcgan", TWO_IMAGES, labelled=p["conditional"] != "none")


SPEC = ModelSpec(name="dcgan", data="images", params=DCGANParams, estimate=conv_pair_estimate,
                 recipe="genq.core.models.dcgan.recipe:DCGANRecipe", summary=__doc__.split(": ", 1)[1],
                 check_data=check_data)
