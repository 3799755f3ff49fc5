"""The model library's front door: what a worker calls to train a model kind or generate from a checkpoint.

The worker passes plain values and a `Hooks` object; side effects (metrics, progress, checkpoints,
stop requests) flow through the hooks so this library never touches the database or the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from genq.core import spec
from genq.core.errors import CoreError, DataError, ParamError, RankLost, UnknownClasses  # noqa: F401 - the front door names its errors

T = TypeVar("T")

# The datasets that ship with genq (generated or read locally, never downloaded) and their kinds.
BUILTIN_DATASETS = {"digits": "images", "tones": "audio", "pydoc": "text"}


@dataclass
class DataSource:
    """A dataset as the worker found it: an uploaded file or folder, or a built-in name."""

    kind: str  # text, images, audio, prompts
    path: Path | None = None  # the uploaded file (a text file, a zip, a WAV) or an extracted folder
    builtin: str | None = None  # one of BUILTIN_DATASETS


@dataclass
class Sample:
    """One generated item. Images are PNG files and audio WAV files under the job's output folder."""

    kind: str  # text, image, audio
    prompt: str | None = None
    text: str | None = None
    path: Path | None = None


@dataclass
class RowResult:
    """One generated sample of one input row of a batch generation job, or the row's error."""

    row: int
    index: int  # the output's number in the job: row * num_samples + sample
    prompt: str | None
    text: str | None
    status: str = "ok"  # ok or error
    error: str | None = None  # the error, or a note on an ok row (its prompt was truncated)
    row_id: str | None = None
    tokens: int = 0  # new tokens generated


@dataclass
class TrainResult:
    step: int
    stopped: str | None = None  # None: finished; "cancel" or "shutdown": stopped early after a checkpoint
    samples: list[Sample] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # the final evaluation


class Hooks:
    """Callbacks from a running job to whoever runs it. The defaults do nothing, for tests and scripts."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Record metric values (names like train/loss, val/loss, eval/fid) at `step`."""

    def progress(self, done: int, total: int) -> None:
        """Report progress: training steps, or prompts generated."""

    def checkpoint_written(self, step: int, path: Path) -> None:
        """The checkpoint for `step` is written at `path`; called in the thread that wrote it, while training
        goes on: the place for slow work on its files (an upload). checkpoint() follows, in the job's thread."""

    def checkpoint(self, step: int, path: Path) -> None:
        """A checkpoint for `step` was written (atomically) at `path`."""

    def samples(self, step: int, samples: list[Sample]) -> None:
        """The gallery drawn after the evaluation at `step` (files under workdir/samples/step-XXXXXXXX/)."""

    def rows(self, results: list[RowResult]) -> None:
        """Rows of a batch generation job that just finished (all samples of each row at once)."""

    def stop_requested(self) -> str | None:
        """'cancel' or 'shutdown' when the job should checkpoint and stop; None to go on. Cheap to call."""
        return None

    def log(self, message: str) -> None:
        """A line for the job's log."""


def each_prompt(prompts: list[str | None], hooks: Hooks,
                make: Callable[[int, str | None], Iterable[Sample] | None]) -> list[Sample]:
    """The samples of make(i, prompt) for every prompt, reporting progress and stopping between prompts; a make
    that returns None was stopped partway through its prompt, whose samples are then not kept (a clip cut short
    is no sample of what was asked)."""
    out: list[Sample] = []
    hooks.progress(0, len(prompts))
    for i, prompt in enumerate(prompts):
        reason = hooks.stop_requested()
        if reason:
            hooks.log(f"stop requested ({reason}) after {i} of {len(prompts)} prompts")
            break
        made = make(i, prompt)
        if made is None:
            hooks.log(f"stop requested ({hooks.stop_requested()}) during prompt {i + 1} of {len(prompts)}: its "
                      f"unfinished samples are dropped, those of the {i} before it kept")
            break
        out.extend(made)
        hooks.progress(i + 1, len(prompts))
    return out


def train(model: str, params: dict[str, Any], data: DataSource, workdir: Path, hooks: Hooks,
          device: str = "cpu", world: int = 1, gpus: Sequence[str] = ()) -> TrainResult:
    """Train `model` on `data`; resume from the newest checkpoint in `workdir` if there is one. Besides the
    model's own metrics: throughput, memory/peak_bytes, and throughput/mfu on a GPU whose peak is known.
    world > 1: as that many data-parallel processes (genq.core.parallel; on CUDA, rank r on GPU gpus[r])."""
    from genq.core import device as dev
    from genq.core import model_cache
    from genq.core.recipe import fit

    model_cache.clear()  # the models generation kept loaded would take memory the training needs
    recipe = spec.get(model).load_recipe()
    workdir.mkdir(parents=True, exist_ok=True)
    dev.prepare(device)
    if world > 1:
        from genq.core import parallel

        return parallel.train(recipe, params, data, workdir, hooks, device, gpus, world)
    return fit(recipe, params, data, workdir, hooks, device)


def keep_models(max_models: int, max_bytes: int) -> None:
    """How many trained models generate() keeps loaded between jobs in this process (0: none), and how many
    bytes of weights at most (genq.core.model_cache)."""
    from genq.core import model_cache

    model_cache.configure(max_models, max_bytes)


def use_models_folder(folder: Path) -> None:
    """Where the pretrained models named by "base" live in this process (genq.core.base_models)."""
    from genq.core import base_models

    base_models.configure(folder)


def generate_from_base(model: str, base: str, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
                       hooks: Hooks, device: str = "cpu") -> list[Sample]:
    """Generate `params['num_samples']` samples per prompt from pretrained model `base` of the models folder,
    with model kind `model` (one whose spec says pretrained=True); records memory/peak_bytes like generate()."""
    recipe = _pretrained(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _measured(hooks, device, lambda: recipe.generate_from_base(base, prompts, params, out_dir, hooks, device))


def generate(source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
             hooks: Hooks, device: str = "cpu") -> list[Sample]:
    """Generate `params['num_samples']` samples per prompt from the trained model in `source_workdir`; records
    memory/peak_bytes (at step 0) when done."""
    recipe = _trained(source_workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _measured(hooks, device, lambda: recipe.generate(source_workdir, prompts, params, out_dir, hooks, device))


def generates_rows(model: str) -> bool:
    """Whether model kind `model` generates prompt rows with continuous batching (generate_rows)."""
    return hasattr(spec.get(model).load_recipe(), "generate_rows")


def generate_rows(source_workdir: Path, rows: list[Any], params: dict[str, Any], hooks: Hooks,
                  device: str = "cpu") -> bool:
    """Generate every usable row of `rows` (genq.core.data.prompts.PromptRow) from the trained text model in
    `source_workdir` with continuous batching, reporting rows to hooks.rows() as they finish. Returns False
    when hooks.stop_requested() stopped it first (the rows not reported were not generated)."""
    recipe = _trained(source_workdir)
    return _measured(hooks, device, lambda: recipe.generate_rows(source_workdir, rows, params, hooks, device))


def generate_rows_from_base(model: str, base: str, rows: list[Any], params: dict[str, Any], hooks: Hooks,
                            device: str = "cpu") -> bool:
    """generate_rows() from pretrained model `base` of the models folder, with model kind `model` (one whose spec
    says pretrained=True and whose recipe generates rows); records memory/peak_bytes like generate()."""
    recipe = _pretrained(model)
    return _measured(hooks, device, lambda: recipe.generate_rows_from_base(base, rows, params, hooks, device))


def _trained(source_workdir: Path):
    """The recipe of the model kind trained in `source_workdir` (its checkpoint names it)."""
    from genq.core import checkpoint

    return spec.get(checkpoint.load_model_kind(source_workdir)).load_recipe()


def _pretrained(model: str):
    """The recipe of model kind `model`, or ParamError unless it samples pretrained bases."""
    kind = spec.get(model)
    if not kind.pretrained:
        raise ParamError(f"model '{model}' does not sample a pretrained base")
    return kind.load_recipe()


def _measured(hooks: Hooks, device: str, run: Callable[[], T]) -> T:
    """run() on `device`, prepared, then memory/peak_bytes (at step 0) recorded where the device reports it."""
    from genq.core import device as dev

    dev.prepare(device)
    memory = dev.PeakMemory(device)
    out = run()
    if (peak := memory.bytes()) is not None:
        hooks.metrics(0, {"memory/peak_bytes": peak})
    return out
