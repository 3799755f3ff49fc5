"""The `hf-causal-lm` recipe: fine-tune a Hugging Face causal LM of the models folder on a text dataset, and sample
it (fine-tuned, or the base as saved) with its own tokenizer and KV cache.

Everything loads with local_files_only=True from the resolved base folder (genq.core.base_models): nothing is
downloaded and no path outside the models folder is read. A checkpoint holds the network's weights
(safetensors), its config.json as a dict, and the tokenizer's files, so a fine-tuned job generates even after
its base folder is gone. AdamW, linear warmup then cosine decay to min_lr, gradient clipping.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers loads huggingface_hub: never reach the Hub

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from genq.core import base_models, checkpoint, model_cache  # noqa: E402
from genq.core import device as dev  # noqa: E402
from genq.core import train as loop  # noqa: E402
from genq.core.api import DataError, DataSource, Hooks, Sample, TrainResult, each_prompt  # noqa: E402
from genq.core.batch import Request  # noqa: E402
from genq.core.data.text import TextData, joined, load_text, text_pieces  # noqa: E402
from genq.core.eval.text import eval_rows, sample_metrics, val_loss  # noqa: E402
from genq.core.models._text import generate_prompt_rows, rows_params  # noqa: E402
from genq.core.models.hf_causal_lm.sampling import (  # noqa: E402
    GEN_BATCH,
    context_window,
    generate_requests,
    sample_rows,
)
from genq.core.recipe import GALLERY_SEED, Recipe  # noqa: E402
from genq.core.spec import generate_params  # noqa: E402

hf_logging.disable_progress_bar()  # "Loading weights" bars would fill the job logs
FINAL_SAMPLES, GALLERY_SAMPLES, GALLERY_TOKENS, FINAL_TOKENS = 3, 3, 32, 64


class HFCausalLMRecipe(Recipe):
    kind = "hf-causal-lm"
    throughput_metric = "throughput/tokens_per_s"

    def build(self, data: DataSource, resumed: checkpoint.Checkpoint | None) -> None:
        p = self.p
        text = load_text(data)
        if resumed is None:
            folder = base_models.resolve(p["base"])  # checked again here: the folder may have changed since submission
            self.tok = load_tokenizer(folder)
            self.net = load_pretrained(folder).to(self.device)
            self.config = {"base": p["base"], "hf_config": hf_config_dict(self.net)}
            self.tokenizer_files = tokenizer_files(self.tok)
        else:  # weights, optimizer and RNG come from the checkpoint (fit restores them): the base is not read
            self.config = resumed.config
            self.tokenizer_files = resumed.state["tokenizer_files"]
            self.tok = tokenizer_from_files(self.tokenizer_files)
            self.net = network(self.config).to(self.device)
        self.net.train()
        # A piece of ~1M characters at a time: one call on an 11 MB text took 2.7 GB (its encoding keeps every
        # offset). A tokenizer that adds a prefix space per call (SentencePiece) adds one per piece.
        ids = joined(np.asarray(self.tok(piece, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)
                     for piece in text_pieces(text, 1 << 20))
        self.ds = TextData(ids, p["block_size"], p["batch_size"], p["seed"], self.device)
        self.modules = {"model": self.net}
        decay = [t for t in self.net.parameters() if t.dim() >= 2]  # matrices decay; biases and norms do not
        rest = [t for t in self.net.parameters() if t.dim() < 2]
        self.optimizers = {"optimizer": torch.optim.AdamW(
            [{"params": decay, "weight_decay": p["weight_decay"]}, {"params": rest, "weight_decay": 0.0}],
            lr=p["lr"], betas=(0.9, 0.95), fused=dev.fused_adamw(self.device))}

    def describe(self) -> str:
        return f"hf-causal-lm: {self.config['hf_config']['model_type']} '{self.p['base']}', {len(self.tok)} tokens"

    def extra_state(self) -> dict[str, Any]:
        return {"tokenizer_files": self.tokenizer_files, "data": self.ds.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ds.load_state_dict(state["data"])

    def items_per_step(self) -> int:
        return self.p["batch_size"] * self.p["block_size"]

    def lr_schedule(self):
        p = self.p
        min_lr = p["min_lr"] if p["min_lr"] is not None else p["lr"] / 10
        return lambda step: loop.cosine_lr(step, p["lr"], min_lr, p["warmup_steps"], p["max_steps"])

    def step(self, step: int) -> dict[str, torch.Tensor]:
        x, y = self.ds.get_batch("train")  # (B, T) each
        with dev.autocast(self.device):  # float32 on a CPU: its bf16 attention backward is slow there
            loss = _loss(self.net, x, y)
        opt = self.optimizers["optimizer"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.p["grad_clip"]:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.p["grad_clip"])
        opt.step()
        return {"loss": loss.detach()}

    def evaluate(self, step: int) -> dict[str, float]:
        p = self.p
        rows = eval_rows(p["batch_size"], p["block_size"], len(self.tok))
        with dev.autocast(self.device):  # as training computes
            return val_loss(_WithLoss(self.net), self.ds.val_batches(p["eval_iters"], rows))

    def gallery(self, step: int, folder: Path) -> list[Sample]:
        """A few short unconditional texts from the same seeds at every step."""
        seeds = [self.p["seed"] + GALLERY_SEED + i for i in range(GALLERY_SAMPLES)]
        return self._unconditional(seeds, GALLERY_TOKENS)

    def finish(self, result: TrainResult, folder: Path) -> list[Sample]:
        samples = self._unconditional([self.p["seed"] + i for i in range(FINAL_SAMPLES)], FINAL_TOKENS)
        extra = sample_metrics([s.text or "" for s in samples])
        self.hooks.metrics(result.step, extra)
        result.metrics = {**result.metrics, **extra}
        return samples

    def _unconditional(self, seeds: list[int], max_new_tokens: int) -> list[Sample]:
        was_training = self.net.training
        self.net.eval()
        texts = _texts(self.net, self.tok, None, seeds, self.device, max_new_tokens=max_new_tokens,
                       temperature=0.8, top_k=None, top_p=None)
        self.net.train(was_training)
        return [Sample(kind="text", prompt=None, text=t) for t in texts]

    @classmethod
    def generate(cls, source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
                 hooks: Hooks, device: str) -> list[Sample]:
        """num_samples texts per prompt from the fine-tuned checkpoint in `source_workdir`."""
        tok, net = cls.loaded(source_workdir, device)
        return _generate(tok, net, prompts, params, hooks, device)

    @classmethod
    def generate_from_base(cls, base: str, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
                           hooks: Hooks, device: str) -> list[Sample]:
        """num_samples texts per prompt from base model `base` of the models folder, as it was saved."""
        tok, net = cls._base(base, hooks, device)
        return _generate(tok, net, prompts, params, hooks, device)

    @classmethod
    def generate_rows(cls, source_workdir: Path, rows: list, params: dict[str, Any], hooks: Hooks,
                      device: str) -> bool:
        """num_samples texts per usable prompt row (genq.core.data.prompts.PromptRow) from the fine-tuned checkpoint
        in `source_workdir`, as gpt's and gru's (genq.core.models._text.generate_prompt_rows): each row's samples go
        to hooks.rows() as they finish. False when a stop request ended it first."""
        tok, net = cls.loaded(source_workdir, device)
        return _generate_rows(tok, net, rows, params, hooks, device)

    @classmethod
    def generate_rows_from_base(cls, base: str, rows: list, params: dict[str, Any], hooks: Hooks,
                                device: str) -> bool:
        """generate_rows() from base model `base` of the models folder, as it was saved."""
        tok, net = cls._base(base, hooks, device)
        return _generate_rows(tok, net, rows, params, hooks, device)

    @classmethod
    def _base(cls, base: str, hooks: Hooks, device: str) -> tuple[Any, nn.Module]:
        """(tokenizer, network in eval mode) of base `base`, kept loaded between jobs like a trained checkpoint
        (a rewritten folder is another key)."""
        folder = base_models.resolve(base)
        hooks.log(f"sampling base '{base}' from the models folder")

        def build() -> tuple[tuple[Any, nn.Module], int]:
            net = load_pretrained(folder, float32=not dev.is_cuda(device)).to(device).eval()
            weights = {t.data_ptr(): t.nbytes for t in net.state_dict().values()}  # a tied head counted once
            return (load_tokenizer(folder), net), sum(weights.values())

        return model_cache.keep((cls.kind, "base", device, base_models.identity(folder)), build)

    @classmethod
    def generation_model(cls, ckpt: checkpoint.Checkpoint, device: str) -> tuple[Any, nn.Module]:
        """(tokenizer, network in eval mode) of a fine-tuned checkpoint."""
        net = network(ckpt.config).to(device)
        ckpt.load_into({"model": net})
        return tokenizer_from_files(ckpt.state["tokenizer_files"]), net.eval()


# ------------------------------------------------------------------------------------------ loading and saving

def load_pretrained(folder: Path, float32: bool = True) -> nn.Module:
    """The causal LM saved in `folder`: in float32 (training keeps fp32 weights; autocast runs bf16 on a GPU), or as
    from_pretrained loads it (transformers 5: the saved dtype; for sampling a base on a GPU, where a bf16 model
    takes half the memory it would in fp32)."""
    try:
        net = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"base '{folder.name}' could not be loaded as a causal LM: {exc}") from None
    return net.float() if float32 else net


def load_tokenizer(folder: Path):
    """The model's own tokenizer from `folder`."""
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"base '{folder.name}' has no tokenizer genq can load: {exc}") from None


def hf_config_dict(net: nn.Module) -> dict[str, Any]:
    """The network's config as plain JSON values (what a checkpoint may hold), without the folder it came from."""
    config = json.loads(net.config.to_json_string(use_diff=False))
    config.pop("_name_or_path", None)
    return config


def network(config: dict[str, Any]) -> nn.Module:
    """A network of a checkpoint's config (random weights: load_into fills them)."""
    hf = dict(config["hf_config"])
    hf_config = AutoConfig.for_model(hf.pop("model_type"), **hf)
    return AutoModelForCausalLM.from_config(hf_config).float()


def tokenizer_files(tok) -> dict[str, Any]:
    """The tokenizer as save_pretrained writes it: file name -> text (or a uint8 tensor for binary files)."""
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        files: dict[str, Any] = {}
        for path in Path(tmp).iterdir():
            raw = path.read_bytes()
            try:
                files[path.name] = raw.decode("utf-8")
            except UnicodeDecodeError:  # a sentencepiece model, say
                files[path.name] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return files


def tokenizer_from_files(files: dict[str, Any]):
    """The tokenizer that tokenizer_files() saved."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            if "/" in name or name.startswith("."):
                raise checkpoint.CheckpointError(f"the checkpoint's tokenizer file name {name!r} is not a file name")
            data = content.encode("utf-8") if isinstance(content, str) else content.numpy().tobytes()
            (Path(tmp) / name).write_bytes(data)
        return AutoTokenizer.from_pretrained(tmp, local_files_only=True, trust_remote_code=False)


# ------------------------------------------------------------------------------------------ loss and sampling

def _loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = net(input_ids=x, use_cache=False).logits  # (B, T, vocab)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


class _WithLoss(nn.Module):
    """The network as genq's evaluation calls a language model: (x, y) -> (logits, loss)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, _loss(self.net, x, y)


def start_ids(tok) -> list[int]:
    """What an unconditional sample starts from: the BOS token, else EOS (GPT-2's <|endoftext|>), else a newline."""
    for token_id in (tok.bos_token_id, tok.eos_token_id):
        if token_id is not None:
            return [token_id]
    return tok.encode("\n", add_special_tokens=False) or [0]


def _texts(net: nn.Module, tok, prompt: str | None, seeds: list[int], device: str, **sampling) -> list[str]:
    """One text per seed continuing `prompt` (the prompt included), or from start_ids() without one."""
    ids = tok.encode(prompt, add_special_tokens=False) if prompt else []
    if prompt and not ids:
        raise DataError(f"the prompt {prompt!r} has no tokens the model knows")
    rows = sample_rows(net, ids or start_ids(tok), seeds, device, eos_id=tok.eos_token_id, **sampling)
    return [decoded(tok, ids + new) for new in rows]


def decoded(tok, ids: list[int]) -> str:
    """The text of `ids`, special tokens left out, a NUL character (a byte-level vocabulary has one, and a barely
    trained model samples it) written as U+FFFD: PostgreSQL text holds no NUL."""
    return tok.decode(ids, skip_special_tokens=True).replace("\x00", "\ufffd")


def _generate(tok, net: nn.Module, prompts: list[str | None], params: dict[str, Any], hooks: Hooks,
              device: str) -> list[Sample]:
    """num_samples texts per prompt. Row j of prompt i draws from its own generator seeded from (seed, i, j), so
    its text depends neither on the other rows of its batch nor on how many samples were asked for."""
    g = generate_params(params)
    seed = g["seed"] if g["seed"] is not None else int.from_bytes(os.urandom(4), "little")

    def make(i: int, prompt: str | None) -> list[Sample]:
        seeds = [seed * 1_000_003 + i * 10_007 + j for j in range(g["num_samples"])]
        with dev.autocast(device):
            texts = _texts(net, tok, prompt, seeds, device, max_new_tokens=g["max_new_tokens"],
                           temperature=g["temperature"], top_k=g["top_k"], top_p=g["top_p"])
        return [Sample(kind="text", prompt=prompt, text=t) for t in texts]

    return each_prompt(prompts, hooks, make)


def _generate_rows(tok, net: nn.Module, rows: list, params: dict[str, Any], hooks: Hooks, device: str) -> bool:
    """Prompt rows as gpt and gru generate them (generate_prompt_rows): a row's own params and seed, a prompt past
    the context window cut from the left with a note, rows reported as they finish. The rows whose prompts are as
    long and that sample alike run together, at most `batch_size` (else GEN_BATCH) at a time (generate_requests)."""
    g = rows_params(params)
    at_once = min(GEN_BATCH, g["batch_size"] or GEN_BATCH)

    def encode(prompt: str | None) -> list[int]:
        ids = tok.encode(prompt, add_special_tokens=False) if prompt else start_ids(tok)
        if not ids:
            raise DataError("the prompt has no tokens the model knows")
        return ids

    def new_text(request: Request, tokens: list[int]) -> str:
        """The text of a row's new tokens, decoded after the prompt's last tokens and cut after their text: a
        tokenizer that drops a leading space at the start of a text (SentencePiece) keeps it here."""
        tail = list(request.prompt[-4:])
        head, text = decoded(tok, tail), decoded(tok, tail + tokens)
        return text[len(head):] if text.startswith(head) else decoded(tok, tokens)

    def run(requests: list[Request], finished, should_stop) -> bool:
        hooks.log(f"{len(requests)} texts, up to {at_once} at a time (those whose prompts are as long and that "
                  "sample alike)")
        with dev.autocast(device):
            return generate_requests(net, requests, device, finished, new_text, eos_id=tok.eos_token_id,
                                     should_stop=should_stop, rows_at_once=at_once)

    return generate_prompt_rows(rows, g, hooks, encode, context_window(net),
                                lambda row, text: (row.prompt or "") + text, run)
