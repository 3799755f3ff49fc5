"""What a model kind is, in one place, and the registry of the kinds genq knows.

Each folder under genq/core/models/ is one model kind. Its `__init__.py` declares `SPEC = ModelSpec(...)`:
the kind's name, the data it trains on, its typed params, its memory estimate, and its recipe (a
genq.core.recipe.Recipe subclass: network config, training step, evaluation, generation). The registry
finds the folders, so adding a model kind is adding a folder; the platform (API, dashboard, worker) reads
everything it needs from `registry()`.

Torch-free on purpose: the web process validates submissions and estimates memory with this module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from genq.core.errors import ParamError

DataKind = Literal["text", "images", "audio"]
DATA_KINDS = ("text", "images", "audio")

# The memory estimate: weights, gradients and the two Adam moments take 16 bytes per fp32 parameter; each
# model estimates its activations (Korthikanti et al. 2022 for transformers, a per-layer tally for the rest).
# The aim is the right order of magnitude, not a byte count.
BYTES_PER_PARAM = 16
FLOAT = 4
OVERHEAD = 128 * 2**20  # allocator slack, framework buffers
MAX_SEED = 2**63 - 1  # what torch.manual_seed takes as a signed 64-bit int
MIN_TEMPERATURE = 1e-6  # logits / 1e-40 overflow float32: the softmax turns to NaN
MAX_TEMPERATURE = 100
MAX_NEW_TOKENS = 100_000
MAX_TOP_K = 2**31 - 1  # a top_k past the vocabulary keeps all of it; past this, it overflowed a tensor
MAX_STOPS, MAX_STOP_CHARS = 4, 100  # stop strings of a job or of a prompts row
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class Params(BaseModel):
    # strict: "four" is not an int and "1" is not a bool; extra keys are refused by name.
    model_config = ConfigDict(extra="forbid", strict=True)


class TrainParams(Params):
    """What every training job takes; each model kind subclasses it with its own fields and defaults."""

    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=10)
    max_steps: int = Field(1000, ge=1, le=10_000_000)
    eval_interval: int = Field(100, ge=1)
    eval_iters: int = Field(20, ge=1, le=1000)
    checkpoint_interval: int = Field(100, ge=1)
    seed: int = Field(1337, ge=0, le=MAX_SEED)


def check_min_lr(lr: float, min_lr: float | None) -> None:
    """ValueError unless the learning-rate schedule decays (min_lr, when set, at most lr)."""
    if min_lr is not None and min_lr > lr:
        raise ValueError(f"min_lr ({min_lr:g}) must be at most lr ({lr:g}): the schedule decays from lr to it")


class GenerateParams(Params):
    """What a generation job takes; each model reads the fields that apply to it."""

    num_samples: int = Field(1, ge=1, le=1000)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    # text
    max_new_tokens: int = Field(200, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)  # beyond the vocabulary: all of it
    top_p: float | None = Field(None, gt=0, le=1)
    stop: list[StopString] | None = Field(None, max_length=MAX_STOPS)  # strings that end a text
    batch_size: int | None = Field(None, ge=1, le=4096)  # text: caps the rows decoded at once
    template: str | None = Field(None, max_length=2000)  # a CSV prompts file: "Describe {name}: {features}"
    # audio
    seconds: float = Field(1.0, gt=0, le=600)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v  # one string, as a prompts file's row may give it


@dataclass(frozen=True)
class ModelSpec:
    """One model kind: everything the platform needs to know about it without loading torch."""

    name: str
    data: DataKind
    params: type[TrainParams]
    estimate: Callable[[dict[str, Any]], tuple[int, int]]  # validated params -> (parameters, activation bytes)
    recipe: str  # "module:Class" of its genq.core.recipe.Recipe subclass (training and generation); loads torch
    summary: str  # one line for listings and the README
    # True: its params name a pretrained model of the models folder (genq.core.base_models) by "base", and a
    # generate job may sample such a base directly, without a training job (the recipe's generate_from_base)
    pretrained: bool = False
    # True: a training job may take gpus > 1, run as that many data-parallel ranks (the recipe's parallel())
    data_parallel: bool = False
    # (validated params, an uploaded dataset's info) -> None, or DataError for data the recipe's build would
    # refuse: said at submission, not by a worker after the job waited in the queue
    check_data: Callable[[dict[str, Any], dict[str, Any]], None] | None = None

    def train_params(self, params: object) -> dict[str, Any]:
        """The full params for a training job, or ParamError naming each bad key."""
        return validate(self.params, params, f"params for model '{self.name}'")

    def memory_bytes(self, params: dict[str, Any]) -> int:
        """Bytes one device needs to train this model with validated `params`."""
        n_params, activations = self.estimate(params)
        averaged = FLOAT if params.get("ema_decay") else 0  # the weights' average a kind shows (genq.core.ema)
        return n_params * (BYTES_PER_PARAM + averaged) + activations + OVERHEAD

    def load_recipe(self):
        """The Recipe subclass (imports torch)."""
        module, _, name = self.recipe.partition(":")
        recipe = getattr(importlib.import_module(module), name)
        if recipe.kind != self.name:  # its checkpoints would carry another kind's name
            raise ImportError(f"{self.recipe} trains '{recipe.kind}', not '{self.name}'")
        return recipe


def validate(cls: type[Params], params: object, what: str) -> dict[str, Any]:
    """`params` checked against `cls` with defaults filled in, or ParamError naming every bad key."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParamError(f"{what} must be a JSON object of key/value pairs")
    try:
        return cls.model_validate(params).model_dump()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown param '{key}' (known: {', '.join(sorted(cls.model_fields))})")
            else:  # no key: a check across params, whose message names them
                problems.append(f"param '{key}': {message}" if key else message)
        raise ParamError(f"invalid {what}: " + "; ".join(problems), problems) from None


def generate_params(params: object) -> dict[str, Any]:
    """The full generation params, or ParamError naming each bad key."""
    return validate(GenerateParams, params, "generation params")


@cache
def registry() -> dict[str, ModelSpec]:
    """Every model kind: the SPEC of each package under genq.core.models, by name."""
    from genq.core import models

    found = []
    for info in pkgutil.iter_modules(models.__path__):
        if info.ispkg and not info.name.startswith("_"):
            spec = importlib.import_module(f"{models.__name__}.{info.name}").SPEC
            if spec.name.replace("-", "_") != info.name:  # hf-causal-lm lives in hf_causal_lm/
                raise ImportError(f"genq.core.models.{info.name} declares a model named '{spec.name}'")
            found.append(spec)
    # Listed by data kind (text first), then name: the order of menus and messages.
    found.sort(key=lambda s: (DATA_KINDS.index(s.data), s.name))
    return {spec.name: spec for spec in found}


def pretrained() -> ModelSpec | None:
    """The model kind that samples a pretrained base directly (a generate job naming "base"), if there is one."""
    return next((s for s in registry().values() if s.pretrained), None)


def get(name: object) -> ModelSpec:
    """The spec of model kind `name`, or ParamError listing the known ones."""
    spec = registry().get(name) if isinstance(name, str) else None
    if spec is None:
        raise ParamError(f"unknown model '{name}' (known: {', '.join(registry())})")
    return spec
