"""The models folder: pretrained models saved with Hugging Face's `save_pretrained`, one folder per model,
named by `"base": NAME` in a job. Torch-free: the web process lists the folder and checks names with it.

A name is one folder name (no "/", no "..", not absolute) and what it names must stay inside the models
folder once symlinks are resolved: the folder itself and every file or folder in it. Nothing outside the
models folder is read. The process that runs genq sets the folder once (`configure`: the web app and the
worker do, from GENQ_MODELS); the model kinds that read it call `root()` and `resolve()`.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

from genq.core.errors import ParamError

CONFIG = "config.json"
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KiB; a bigger one is not a model's config
MAX_HEADER_BYTES = 100 << 20  # a safetensors header (JSON) larger than this is not read for the parameter count
MAX_ENTRIES = 10_000  # files and folders checked in one model folder
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
# Class names of Hugging Face causal LM heads (GPT2LMHeadModel, LlamaForCausalLM, ...): what AutoModelForCausalLM
# builds. Encoder models (BertForMaskedLM) and seq2seq ones (T5ForConditionalGeneration) are refused.
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")

_root: Path | None = None


def configure(folder: Path | str) -> None:
    """Use `folder` as this process' models folder."""
    global _root
    _root = Path(folder)


def root() -> Path:
    """This process' models folder (ParamError if none was configured)."""
    if _root is None:
        raise ParamError("no models folder is configured (GENQ_MODELS)")
    return _root


def check_name(name: object) -> str:
    """`name` if it is a single folder name, else ParamError saying why."""
    if not isinstance(name, str) or not name:
        raise ParamError("base must be the name of a folder in the models folder")
    if "/" in name or "\\" in name or name.startswith(".") or "\0" in name or not NAME.match(name):
        raise ParamError(f"base {_shown(name)} is not a folder name: letters, digits and _ . + - only, "
                         "no '/', no '..', not absolute, at most 128 characters")
    return name


def resolve(name: object, folder: Path | None = None) -> Path:
    """The resolved folder of base model `name` in the models folder (`folder`, else root()), checked: it exists,
    it and everything in it stays inside the models folder, and its config.json is a causal language model's.
    ParamError naming the problem otherwise."""
    name = check_name(name)
    models = (folder or root()).resolve()
    path = (models / name).resolve()
    if not path.is_relative_to(models) or path == models:
        raise ParamError(f"base '{name}' resolves outside the models folder (a symlink): refused")
    if not path.is_dir():
        raise ParamError(f"base '{name}' not found in the models folder (known: {_known(models)})")
    _check_inside(path, models, name)
    config = read_config(path, name)
    _safetensors_count(path)  # its weights files are readable
    if not is_causal_lm(config):
        kinds = ", ".join(config.get("architectures") or []) or config.get("model_type") or "unknown"
        raise ParamError(f"base '{name}' is not a causal language model ({kinds}): hf-causal-lm needs a model "
                         "that AutoModelForCausalLM loads, such as GPT2LMHeadModel or LlamaForCausalLM")
    return path


def read_config(path: Path, name: str) -> dict[str, Any]:
    """The config.json of model folder `path` as a dict, or ParamError."""
    file = path / CONFIG
    try:
        if file.stat().st_size > MAX_CONFIG_BYTES:
            raise ParamError(f"base '{name}': {CONFIG} is larger than {MAX_CONFIG_BYTES} bytes")
        config = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamError(f"base '{name}' has no {CONFIG}: save the model with save_pretrained") from None
    except (OSError, ValueError) as exc:
        raise ParamError(f"base '{name}': {CONFIG} is not readable JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ParamError(f"base '{name}': {CONFIG} has no model_type: save the model with save_pretrained")
    return config


def is_causal_lm(config: dict[str, Any]) -> bool:
    """Whether a config.json names a causal language model head."""
    architectures = config.get("architectures")
    return isinstance(architectures, list) and any(
        isinstance(a, str) and a.endswith(CAUSAL_SUFFIXES) for a in architectures)


def context_window(config: dict[str, Any]) -> int | None:
    """The longest input the model reads (n_positions, max_position_embeddings), or None when unknown."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def shape(config: dict[str, Any]) -> dict[str, int]:
    """Layers, width, heads, feed-forward width and vocabulary of a transformer config (GPT-2 or Llama names)."""
    def first(*keys: str, default: int = 0) -> int:
        return next((config[k] for k in keys if isinstance(config.get(k), int) and config[k] > 0), default)
    width = first("n_embd", "hidden_size", "d_model")
    return {"layers": first("n_layer", "num_hidden_layers", "num_layers"), "width": width,
            "heads": first("n_head", "num_attention_heads", default=1),
            "ffn": first("n_inner", "intermediate_size", "ffn_dim", default=4 * width),
            "vocab": first("vocab_size")}


def parameter_count(path: Path, config: dict[str, Any]) -> int:
    """The model's parameters: exact from its safetensors headers when it has them, else estimated from its
    config (attention 4d², MLP 2d·ffn per layer, the embedding, an untied head, learned positions)."""
    counted = _safetensors_count(path)
    if counted is not None:
        return counted
    s = shape(config)
    per_layer = 4 * s["width"] ** 2 + 2 * s["width"] * s["ffn"]
    head = 0 if config.get("tie_word_embeddings", True) else s["vocab"] * s["width"]
    positions = config["n_positions"] * s["width"] if isinstance(config.get("n_positions"), int) else 0  # GPT-2's
    return s["layers"] * per_layer + s["vocab"] * s["width"] + head + positions


def describe(path: Path, name: str) -> dict[str, Any]:
    """What GET /api/v1/models says of one folder: name, model_type, architectures, causal_lm, parameters,
    size_bytes, and error when it is not usable."""
    entry: dict[str, Any] = {"name": name, "model_type": None, "architectures": [], "causal_lm": False,
                             "parameters": None, "size_bytes": 0, "error": None}
    try:
        models = path.parent.resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(models) or not resolved.is_dir():
            raise ParamError(f"base '{name}' resolves outside the models folder (a symlink): refused")
        _check_inside(resolved, models, name)
        config = read_config(resolved, name)
        entry.update(model_type=config["model_type"], causal_lm=is_causal_lm(config),
                     architectures=[a for a in config.get("architectures") or [] if isinstance(a, str)],
                     parameters=parameter_count(resolved, config),
                     size_bytes=sum(f.stat().st_size for f in resolved.rglob("*") if f.is_file()))
    except ParamError as exc:
        entry["error"] = str(exc)
    return entry


def list_models(folder: Path) -> list[dict[str, Any]]:
    """describe() of every folder in the models folder, by name (an absent models folder lists nothing)."""
    if not folder.is_dir():
        return []
    return [describe(entry, entry.name) for entry in sorted(folder.iterdir(), key=lambda p: p.name)
            if NAME.match(entry.name) and not entry.name.startswith(".") and entry.is_dir()]


def identity(path: Path) -> tuple:
    """What names the model in folder `path` as it is now: its resolved path and the name, inode, size and
    modification time of each file in it, which any rewrite changes (genq.core.model_cache's key)."""
    files = sorted(f for f in path.rglob("*") if f.is_file())
    return (str(path.resolve()), *((str(f.relative_to(path)), st.st_ino, st.st_size, st.st_mtime_ns)
                                   for f in files for st in (f.stat(),)))


# ---------------------------------------------------------------------------------------------------------

def _check_inside(path: Path, models: Path, name: str) -> None:
    """ParamError if a symlink anywhere under `path` points outside `models` (the loader would read it)."""
    seen = 0
    for folder, dirs, files in os.walk(path):
        for entry in (*dirs, *files):
            seen += 1
            if seen > MAX_ENTRIES:
                raise ParamError(f"base '{name}' holds more than {MAX_ENTRIES} files")
            item = Path(folder) / entry
            if item.is_symlink() and not item.resolve().is_relative_to(models):
                raise ParamError(f"base '{name}': {item.relative_to(path)} is a symlink out of the models folder: "
                                 "refused")


def _safetensors_count(path: Path) -> int | None:
    """The sum of the tensor sizes in the headers of the folder's *.safetensors files; None without them (or with
    a header too large to read for a count). ParamError for a file that is no safetensors file: loading the
    model would fail on it."""
    total, found = 0, False
    for file in sorted(path.glob("*.safetensors")):
        try:
            with open(file, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > file.stat().st_size - 8:
                    raise ValueError(f"its header's length, {length} bytes, is past the end of the file")
                if length > MAX_HEADER_BYTES:
                    return None
                header = json.loads(f.read(length))
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
        except (OSError, ValueError, struct.error) as exc:
            raise ParamError(f"base '{path.name}': {file.name} is not a readable safetensors file ({exc})") from None
        for key, tensor in header.items():
            if key != "__metadata__" and isinstance(tensor, dict):
                total += math.prod(tensor.get("shape") or [])
        found = True
    return total if found else None


def _known(models: Path) -> str:
    names = [p.name for p in sorted(models.iterdir())[:20] if p.is_dir()] if models.is_dir() else []
    return ", ".join(names) or "none"


def _shown(name: str, limit: int = 60) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "...")
