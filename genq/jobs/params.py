"""Job params as the platform checks them: the model kinds' own specs (genq.core.spec), refusals as 422s."""

from __future__ import annotations

from typing import Any

from genq.core import spec
from genq.errors import refused_as_invalid_input

MODELS = spec.registry()  # name -> ModelSpec, found under genq/core/models/


def validate_train_params(model: str, params: object) -> dict[str, Any]:
    """The full params for a training job of `model`, or InvalidInput naming each bad key."""
    with refused_as_invalid_input():
        return spec.get(model).train_params(params)


def validate_generate_params(params: object) -> dict[str, Any]:
    """The full generation params, or InvalidInput naming each bad key."""
    with refused_as_invalid_input():
        return spec.generate_params(params)
