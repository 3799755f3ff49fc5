"""Atomic, crash-safe checkpoints in a job's workdir.

Layout::

    workdir/checkpoints/step-00000123/model.safetensors  weights, keys "<module>.<param>" ("model.wte.weight")
    workdir/checkpoints/step-00000123/state.pt           the rest, for torch.load(weights_only=True)
    workdir/checkpoints/step-00000123/meta.json          {"step", "kind", "modules"}: cheap to read
    workdir/checkpoints/LATEST                           "step-00000123": the newest complete checkpoint

Usage from a recipe::

    from genq.core import checkpoint

    path = checkpoint.save(workdir, step, {"model": net}, {
        "kind": "gpt",                      # required: the model kind (api.generate dispatches on it)
        "config": asdict(net.config),       # what rebuilds the network
        "optimizer": opt.state_dict(),
        "rng": checkpoint.rng_state(),      # torch/numpy/python (and CUDA) RNG states
        "data": dataset.state_dict(),       # e.g. a torch.Generator state: the data position
    })
    hooks.checkpoint(step, path)

    ckpt = checkpoint.load_latest(workdir, "gpt")  # None when there is none; refuses another kind
    if ckpt is not None:
        net = GPT(GPTConfig(**ckpt.config))
        # weights (strict: every key must match), optimizer state saved under "optimizer", RNG states
        start_step = ckpt.restore({"model": net}, {"optimizer": opt})

save() is snapshot() then write(): a recipe takes the snapshot at the step and has write() run in another
thread while it trains on (genq.core.recipe.fit does).

`state` may hold only tensors, str, int, float, bool, None and dicts/lists/tuples of them (save() checks
and names the offending key). Modules may share tensors (weight tying); module names may not contain ".".

Crash safety: a step folder is written under a temporary name (files fsynced), renamed into place, the
folder fsynced, and only then LATEST is replaced (temp file + fsync + os.replace + fsync). A writer killed
at any point leaves LATEST naming a complete checkpoint; load_latest() also falls back to older step
folders if the newest one cannot be read. The two newest checkpoints are kept.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

from genq.core import checkpoint_files as files
from genq.core.api import DataError
from genq.core.checkpoint_files import LATEST, META, STATE, WEIGHTS  # noqa: F401 - the layout's names, here too


class CheckpointError(DataError):
    """There is no loadable checkpoint where one is needed."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: its step folder, step, model kind, state dict and per-module CPU tensors."""

    path: Path
    step: int
    kind: str
    state: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]

    @property
    def config(self) -> dict[str, Any] | None:
        """The config dict that rebuilds the model (state['config'])."""
        return self.state.get("config")

    def load_into(self, modules: Mapping[str, nn.Module], strict: bool = True) -> None:
        """Copy the saved weights into `modules` (name -> module), on whatever device they live."""
        missing = set(modules) - set(self.tensors)
        if missing:
            raise CheckpointError(f"checkpoint {self.path} has no weights for module(s) {sorted(missing)}")
        for name, module in modules.items():
            module.load_state_dict(self.tensors[name], strict=strict)

    def restore(self, modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer]) -> int:
        """Resume training: weights, each optimizer's state (saved under its key), RNG states; return the step."""
        self.load_into(modules)
        missing = sorted(set(optimizers) - set(self.state))
        if missing:
            raise CheckpointError(f"checkpoint {self.path} has no state for optimizer(s) {missing}: it was written "
                                  "by a version of this model that trained differently; train the model again")
        for key, optimizer in optimizers.items():
            optimizer.load_state_dict(self.state[key])
        set_rng_state(self.state["rng"])
        return self.step


def checkpoint_dir(workdir: Path) -> Path:
    """The folder holding the step folders and LATEST."""
    return Path(workdir) / "checkpoints"


@dataclass(frozen=True)
class Snapshot:
    """What save() writes, taken at one moment (the weights copied to the CPU, the state serialized), so that
    training may change the modules and optimizers while write() writes it in another thread."""

    step: int
    kind: str
    modules: list[str]
    weights: dict[str, torch.Tensor]
    aliases: dict[str, str]  # key -> the key whose tensor it shares (tied weights), written once
    state: bytes  # torch.save of the state


def save(workdir: Path, step: int, modules: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
         state: dict[str, Any]) -> Path:
    """Write a checkpoint for `step` atomically, point LATEST at it, prune old ones; return its folder."""
    return write(workdir, snapshot(step, modules, state))


def snapshot(step: int, modules: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
             state: dict[str, Any]) -> Snapshot:
    """A copy of what save() would write now, for write()."""
    kind = state.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError("checkpoint state needs a 'kind' (the model kind, e.g. 'gpt')")
    state = {**state, "step": int(step)}
    _check_state(state, "state")
    weights, aliases = _flatten(modules)
    buffer = io.BytesIO()
    torch.save(state, buffer)  # now: an optimizer's state_dict() holds the buffers its next step changes
    return Snapshot(int(step), kind, sorted(modules), weights, aliases, buffer.getvalue())


def write(workdir: Path, snap: Snapshot) -> Path:
    """Write `snap` atomically as the checkpoint of its step, point LATEST at it, prune old ones; return its
    folder. Safe in a thread of its own: it reads only the snapshot."""
    root = checkpoint_dir(workdir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{files.PREFIX}{snap.step:08d}"
    final = root / name
    # the same step saved twice (cancelled right after a resume) holds the same state: keep the first
    if not (final.exists() and _loads(final)):
        meta = {"step": snap.step, "kind": snap.kind, "modules": snap.modules, "format": 1}
        tmp = root / files.tmp_name()
        tmp.mkdir()
        files.write_file(tmp / WEIGHTS, st_save(snap.weights, metadata={"aliases": json.dumps(snap.aliases)}))
        files.write_file(tmp / STATE, snap.state)
        files.write_file(tmp / META, json.dumps(meta).encode())
        files.fsync_dir(tmp)
        if final.exists():  # an unreadable folder with our name: move it out of the way first
            files.discard(final, root)
        os.rename(tmp, final)
        files.fsync_dir(root)
    files.write_file(root / files.tmp_name(), (name + "\n").encode(), replace=root / LATEST)
    files.fsync_dir(root)
    files.prune(root, keep_name=name)
    return final


def load_latest(workdir: Path, kind: str | None = None, map_location: str | torch.device = "cpu"
                ) -> Checkpoint | None:
    """The newest checkpoint that loads (LATEST first, then step folders newest first); None if none.

    With `kind`, a checkpoint of another model kind is refused. State stays on the CPU by default (RNG
    states must); load_into() and Optimizer.load_state_dict() move the rest to the model's device.
    """
    errors = []
    for path in files.candidates(checkpoint_dir(workdir)):
        try:
            ckpt = load(path, map_location)
        except Exception as exc:  # a torn or corrupt folder: fall back to the previous one
            errors.append(f"{path.name}: {exc}")
            continue
        if kind is not None and ckpt.kind != kind:
            raise CheckpointError(f"the workdir holds a {ckpt.kind} checkpoint, not {kind}")
        return ckpt
    if errors:
        raise CheckpointError(f"no checkpoint in {workdir} could be loaded: " + "; ".join(errors))
    return None


def load_trained(workdir: Path, kind: str) -> Checkpoint:
    """The newest checkpoint of model `kind` that a training job left in `workdir`; raises if there is none."""
    ckpt = load_latest(workdir, kind)
    if ckpt is None:
        raise CheckpointError(f"no checkpoint found in {workdir}: the training job saved none")
    return ckpt


def load(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load one step folder; raises if any of its files is missing or unreadable (CheckpointError if refused)."""
    path = Path(path)
    meta = json.loads((path / META).read_text())
    try:
        state = torch.load(path / STATE, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message advises weights_only=False, which would run whatever code the file holds
        raise CheckpointError(f"{path}: {STATE} refused: it may hold only tensors and plain values "
                              f"({_unpickler_refusal(exc)})") from None
    with safe_open(path / WEIGHTS, framework="pt", device="cpu") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
        flat = {key: f.get_tensor(key) for key in f.keys()}
    if state.get("step") != meta["step"] or state.get("kind") != meta["kind"]:
        raise CheckpointError(f"{path}: meta.json and state.pt disagree")
    tensors: dict[str, dict[str, torch.Tensor]] = {m: {} for m in meta["modules"]}
    for key, t in flat.items():
        module, _, param = key.partition(".")
        tensors[module][param] = t.to(map_location)
    for key, target in aliases.items():  # tied weights were written once
        module, _, param = key.partition(".")
        tmod, _, tparam = target.partition(".")
        tensors[module][param] = tensors[tmod][tparam]
    return Checkpoint(path=path, step=int(meta["step"]), kind=meta["kind"], state=state, tensors=tensors)


def load_model_kind(workdir: Path) -> str:
    """The model kind ('gpt', 'dcgan', ...) of the newest checkpoint in `workdir`."""
    for path in files.candidates(checkpoint_dir(workdir)):
        try:
            if files.complete(path):
                return json.loads((path / META).read_text())["kind"]
        except (OSError, ValueError, KeyError):
            continue
    raise CheckpointError(f"no checkpoint found in {workdir}: the training job saved none")


def latest_step(workdir: Path) -> int | None:
    """The step of the newest complete checkpoint, without loading it; None if there is none."""
    for path in files.candidates(checkpoint_dir(workdir)):
        if files.complete(path):
            return files.step_of(path.name)
    return None


def identity(workdir: Path) -> tuple | None:
    """What names the checkpoint load_latest() would load now, without reading it: folder_identity() of the
    newest complete step folder; None when there is none."""
    for path in files.candidates(checkpoint_dir(workdir)):
        if files.complete(path) and (found := folder_identity(path)) is not None:
            return found
    return None


def folder_identity(path: Path) -> tuple | None:
    """A step folder's path and the inode, size and modification time of its files, which any rewrite changes;
    None if it is gone (pruned meanwhile)."""
    try:
        stats = [(path / f).stat() for f in (WEIGHTS, STATE, META)]
    except OSError:
        return None
    return (str(Path(path).resolve()), *((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats))


def rng_state() -> dict[str, Any]:
    """The RNG states of python, numpy, torch (and CUDA when in use), in a weights_only-safe form."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------------------------------------

def _flatten(modules) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Prefixed CPU tensors, writing storage shared by several keys (tied weights) only once."""
    flat, aliases, seen = {}, {}, {}
    for mname, module in modules.items():
        if not mname or "." in mname:
            raise ValueError(f"module name {mname!r} must be non-empty and contain no '.'")
        sd = module.state_dict() if isinstance(module, nn.Module) else module
        for pname, t in sd.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"module {mname!r}: {pname!r} is not a tensor")
            key = f"{mname}.{pname}"
            ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                     tuple(t.stride()), t.dtype) if t.numel() else None
            if ident is not None and ident in seen:
                aliases[key] = seen[ident]
                continue
            if ident is not None:
                seen[ident] = key
            flat[key] = t.detach().to("cpu", copy=True).contiguous()
    return flat, aliases


_PRIMITIVES = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.Size)


def _check_state(value: Any, where: str) -> None:
    """Refuse what torch.load(weights_only=True) could not read back, naming the key."""
    if isinstance(value, _PRIMITIVES):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint {where}: key {k!r} must be a str or int")
            _check_state(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_state(v, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint {where} is a {type(value).__name__}: store only tensors, primitives, "
                    "dicts and lists (torch.load(weights_only=True) must read it back)")


def _unpickler_refusal(exc: Exception) -> str:
    """The reason in torch's weights_only error ("Unsupported global: GLOBAL posix.system ..."), without its advice."""
    _, _, reason = str(exc).partition("WeightsUnpickler error:")
    reason = reason.strip().split("\n\n")[0].split(". ")[0].strip()
    return reason or "torch.load(weights_only=True) cannot read it"


def _loads(path: Path) -> bool:
    try:
        load(path)
        return True
    except Exception:
        return False
