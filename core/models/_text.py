"""What the text recipes (gpt, gru) share: data and tokenizer, the step, evaluation, final samples, generation;
and what every text model shares in generating prompt rows (generate_prompt_rows, hf-causal-lm's too).

A text model subclasses `TextRecipe` with its network config, network and optimizer.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genq.core import batch, checkpoint
from genq.core import device as dev
from genq.core import sample as sampling
from genq.core.api import DataError, DataSource, Hooks, RowResult, Sample, TrainResult, each_prompt
from genq.core.data.text import TextData, build_tokenizer, continued, load_text, tokenizer_from_state
from genq.core.eval.text import eval_rows, sample_metrics, val_loss
from genq.core.recipe import GALLERY_SEED, Recipe
from genq.core.spec import generate_params

FINAL_SAMPLES, FINAL_CHARS = 3, 200  # new characters per sample (a third as many word or bpe tokens)
GALLERY_SAMPLES, GALLERY_CHARS = 3, 100
GEN_BATCH = 64  # rows decoded at once when a prompt asks for many samples


class TextRecipe(Recipe):
    """A language model on a text dataset: tokenizer, (x, y) blocks, cross-entropy. Subclasses say how the
    network is configured and built and which optimizer trains it."""

    throughput_metric = "throughput/tokens_per_s"
    autocast = False  # bf16 autocast where the device multiplies bf16 fast (genq.core.device.autocast)

    @classmethod
    def amp(cls, device: str, width: int = 0) -> AbstractContextManager:
        """The autocast context of this model on `device` (genq.core.device.autocast): training and evaluation
        pass the network's width, decoding none; nothing for a model without it."""
        return dev.autocast(device, width) if cls.autocast else nullcontext()

    @staticmethod
    def network_config(p: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        """The network config dict for params `p` and the tokenizer's vocabulary."""
        raise NotImplementedError

    @staticmethod
    def network(config: dict[str, Any]) -> nn.Module:
        """The network of a config dict (from network_config, or a checkpoint's)."""
        raise NotImplementedError

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer | dict[str, torch.optim.Optimizer]:
        """The optimizer of `net`, or several by name (each checkpointed under its name)."""
        raise NotImplementedError

    def build(self, data: DataSource, resumed: checkpoint.Checkpoint | None) -> None:
        p = self.p
        text = load_text(data)
        if resumed is not None:
            self.tok = tokenizer_from_state(resumed.state["tokenizer"])
        else:
            self.tok = build_tokenizer(p["tokenizer"], text, p["vocab_size"])
            self.hooks.log(f"{p['tokenizer']} tokenizer: {self.tok.vocab_size} tokens")
        self._final_texts: list[str] | None = None  # the final samples, when the last gallery drew them
        self.ds = TextData(self.tok.encode_corpus(text), p["block_size"], p["batch_size"], p["seed"], self.device)
        self.config = resumed.config if resumed is not None else self.network_config(p, self.tok.vocab_size)
        self.net = self.network(self.config).to(self.device)
        self.modules = {"model": self.net}  # checkpoints hold the module itself: no "_orig_mod." prefixes
        opt = self.optimizer(self.net)  # one optimizer, or several by name (Muon and AdamW, say)
        self.optimizers = opt if isinstance(opt, dict) else {"optimizer": opt}
        # Only the training step runs compiled: evaluation (eval mode, other batch shapes) and sampling (a
        # cache that grows every token) would each compile graphs of their own for little gain.
        self.train_net = torch.compile(self.net) if p.get("compile") else self.net
        if p.get("compile"):
            self.hooks.log("torch.compile: the first steps include compiling the model")

    def extra_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tok.to_state(), "data": self.ds.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ds.load_state_dict(state["data"])

    def items_per_step(self) -> int:
        return self.p["batch_size"] * self.p["block_size"]

    def parallel(self, gang) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.gang = gang
        self.train_net = DistributedDataParallel(self.train_net)

    def step(self, step: int) -> dict[str, torch.Tensor]:
        x, y = self.ds.get_batch("train")
        if self.gang is not None:  # one rank of a data-parallel run: its rows of the same global batch
            x, y = self.gang.share(x), self.gang.share(y)
        with self.amp(self.device, self.config.get("n_embd", 0)):
            _, loss = self.train_net(x, y)
        self.net.zero_grad(set_to_none=True)
        loss.backward()
        if self.p.get("grad_clip"):
            nn.utils.clip_grad_norm_(self.net.parameters(), self.p["grad_clip"])
        for opt in self.optimizers.values():
            opt.step()
        return {"loss": loss.detach()}

    def evaluate(self, step: int) -> dict[str, float]:
        """val/loss on eval_iters validation batches (nanoGPT's estimate), the same batches at every evaluation
        (the final one too), so the curve's points compare."""
        p = self.p
        rows = eval_rows(p["batch_size"], p["block_size"], self.tok.vocab_size)
        with self.amp(self.device, self.config.get("n_embd", 0)):
            return val_loss(self.net, self.ds.val_batches(p["eval_iters"], rows))

    def gallery(self, step: int, folder: Path) -> list[Sample]:
        """A few short unconditional texts, from the same seed at every step. At the last step the final samples are
        decoded beside them, in the same batch, and kept for finish(): one pass of the decoder, not two (a row's
        text does not depend on the rows beside it, genq.core.batch)."""
        groups = [(self.p["seed"] + GALLERY_SEED, GALLERY_SAMPLES, self._tokens(GALLERY_CHARS))]
        if step == self.p["max_steps"]:
            groups.append(self._final_group())
        texts = self._unconditional(groups)
        self._final_texts = texts[1] if len(texts) > 1 else None
        return [Sample(kind="text", prompt=None, text=t) for t in texts[0]]

    def finish(self, result: TrainResult, folder: Path) -> list[Sample]:
        texts = self._final_texts or self._unconditional([self._final_group()])[0]
        extra = sample_metrics(texts)
        self.hooks.metrics(result.step, extra)
        result.metrics = {**result.metrics, **extra}
        return [Sample(kind="text", prompt=None, text=t) for t in texts]

    def _tokens(self, chars: int) -> int:
        """New tokens for about `chars` characters: a third as many word or bpe tokens."""
        return chars if self.p["tokenizer"] == "char" else chars // 3

    def _final_group(self) -> tuple[int, int, int]:
        return self.p["seed"], FINAL_SAMPLES, self._tokens(FINAL_CHARS)

    def _unconditional(self, groups: list[tuple[int, int, int]]) -> list[list[str]]:
        """For each group (seed, n, max_new), n texts from the start token at temperature 0.8, each row from its own
        seed derived from the group's, all decoded together by the continuous-batching engine with the network in
        eval mode meanwhile. A CPU runs the engine's traced step: a gallery of 3 x 100 characters took 0.42 s
        through the modules' step (the 4-layer 128-wide gpt), more than the evaluation before it."""
        requests = [batch.Request((g, i), self.tok.start_ids(), max_new, seed=seed * 1_000_003 + i, temperature=0.8)
                    for g, (seed, n, max_new) in enumerate(groups) for i in range(n)]
        engine, texts = self._engine(self.net, self.tok, self.device, len(requests)), {}
        training = self.net.training
        self.net.eval()
        try:
            with self.amp(self.device):
                engine.run(requests, lambda out: texts.__setitem__(out.key, out.text))
        finally:
            self.net.train(training)
        return [[texts[g, i] for i in range(n)] for g, (_, n, _) in enumerate(groups)]

    @classmethod
    def generate(cls, source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
                 hooks: Hooks, device: str) -> list[Sample]:
        """num_samples texts per prompt (None: unconditional); stops between prompts when asked to."""
        g = generate_params(params)
        tok, net = cls.loaded(source_workdir, device)
        gen = sampling.seeded_generator(g["seed"], device)

        def make(i: int, prompt: str | None) -> list[Sample]:
            with cls.amp(device):
                texts = _sample(net, tok, prompt, g["num_samples"], gen, device, max_new_tokens=g["max_new_tokens"],
                                temperature=g["temperature"], top_k=g["top_k"], top_p=g["top_p"])
            return [Sample(kind="text", prompt=prompt, text=t) for t in texts]

        return each_prompt(prompts, hooks, make)

    @classmethod
    def generate_rows(cls, source_workdir: Path, rows: list, params: dict[str, Any], hooks: Hooks,
                      device: str) -> bool:
        """num_samples texts per usable prompt row, decoded with continuous batching (genq.core.batch); each
        row's finished samples go to hooks.rows() together. False when a stop request ended it first."""
        g = rows_params(params)
        tok, net = cls.loaded(source_workdir, device)

        def encode(prompt: str | None) -> list[int]:
            ids = tok.encode(prompt) if prompt else tok.start_ids()
            if prompt and not ids:
                raise DataError("the prompt has no tokens the model knows")
            return ids

        def run(requests: list[batch.Request], finished, should_stop) -> bool:
            slots = batch.choose_slots(net, device, len(requests), g["batch_size"], cls._decode_dtype(device).itemsize)
            hooks.log(f"continuous batching: {len(requests)} texts, {slots} at a time")
            engine = cls._engine(net, tok, device, slots)
            with cls.amp(device):
                return engine.run(requests, finished, should_stop)

        return generate_prompt_rows(rows, g, hooks, encode, getattr(net.config, "block_size", None),
                                    lambda row, text: continued(tok, row.prompt or "", text), run)

    @classmethod
    def _decode_dtype(cls, device: str) -> torch.dtype:
        """The dtype the engine's KV cache and decoding run in: bf16 on a GPU for a model that autocasts."""
        return torch.bfloat16 if cls.autocast and dev.is_cuda(device) else torch.float32

    @classmethod
    def _engine(cls, net: nn.Module, tok, device: str, slots: int) -> batch.BatchGenerator:
        """The continuous-batching engine for `net`, `slots` rows at a time, reading at most its context window."""
        return batch.BatchGenerator(net, slots, device, cls._decode_dtype(device), eos_id=tok.eos_id,
                                    decode=tok.decode, context=getattr(net.config, "block_size", None))

    @classmethod
    def generation_model(cls, ckpt: checkpoint.Checkpoint, device: str) -> tuple[Any, nn.Module]:
        """(tokenizer, network in eval mode)."""
        net = cls.network(ckpt.config).to(device)
        ckpt.load_into({"model": net})
        return tokenizer_from_state(ckpt.state["tokenizer"]), net.eval()


def _sample(net: nn.Module, tok, prompt: str | None, n: int, gen: torch.Generator, device: str,
            **sampling_args) -> list[str]:
    """n texts continuing `prompt` (the prompt included), or from the tokenizer's start token."""
    ids = tok.encode(prompt) if prompt else []
    if prompt and not ids:
        raise DataError(f"the prompt {prompt!r} has no tokens the model knows")
    start = ids or tok.start_ids()
    texts = []
    for done in range(0, n, GEN_BATCH):
        rows = min(GEN_BATCH, n - done)
        x = torch.tensor([start] * rows, dtype=torch.long, device=device)
        y = sampling.generate(net, x, generator=gen, eos_id=tok.eos_id, **sampling_args).tolist()
        for row in y:
            new = row[len(start):]
            if tok.eos_id is not None and tok.eos_id in new:
                new = new[:new.index(tok.eos_id)]
            texts.append(tok.decode(ids + new))
    return texts


def row_seed(seed: int | None, row, sample: int) -> int:
    """The seed of one sample of one row: from the row's own seed if it has one (the same text wherever the
    row sits), else from the job's seed and the row's number; never from what runs beside it."""
    own = row.params.get("seed")
    key = f"{own}:{sample}" if own is not None else f"{seed}:{row.row}:{sample}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def rows_params(params: dict[str, Any]) -> dict[str, Any]:
    """The generation params of a prompt rows job, with a seed (the platform fixes one at submission, so that a
    resumed job draws the same; a script that gave none gets a random one)."""
    g = generate_params(params)
    if g["seed"] is None:
        g["seed"] = int.from_bytes(os.urandom(4), "little")
    return g


def generate_prompt_rows(rows: list, g: dict[str, Any], hooks: Hooks, encode: Callable[[str | None], list[int]],
                         context: int | None, written: Callable[[Any, str], str],
                         run: Callable[[list[batch.Request], Callable[[batch.Finished], None], Callable[[], bool]],
                                       bool]) -> bool:
    """What the text models share in generating prompt rows (genq.core.data.prompts.PromptRow), whatever decodes
    them: num_samples requests per usable row, with the row's own params over the job's `g` (rows_params) and
    seeds from row_seed(); a row whose prompt encode() refuses (DataError) reported at once as an error row; a
    prompt longer than `context` noted on its row (the decoder reads its newest tokens). run(requests, finished,
    should_stop) decodes them, calling finished(batch.Finished) as each ends; a row's samples go to hooks.rows()
    together as its last one finishes, written(row, new text) the text stored, with throughput metrics about once
    a second. Returns run's answer: False when a stop request (read every 16 calls of should_stop) ended it."""
    requests, notes, waiting = [], {}, {}
    for row in rows:
        if row.error is not None:
            continue
        try:
            ids = encode(row.prompt)
        except DataError as exc:  # this row's, not the job's: the others run
            hooks.rows([RowResult(row.row, row.row * g["num_samples"], row.prompt, None, "error",
                                  f"row {row.row}: {exc}", row.row_id)])
            continue
        if context and len(ids) > context:
            notes[row.row] = (f"the prompt's {len(ids)} tokens were truncated from the left to the model's "
                              f"context of {context}")
        p = {**g, **row.params}
        waiting[row.row] = [row, []]
        for k in range(g["num_samples"]):
            requests.append(batch.Request(
                key=(row.row, k), prompt=ids, max_new_tokens=p["max_new_tokens"], seed=row_seed(p["seed"], row, k),
                temperature=p["temperature"], top_k=p["top_k"], top_p=p["top_p"], stop=p.get("stop") or ()))
    start, generated, rows_done = time.monotonic(), 0, 0
    last_report = start

    def finished(out: batch.Finished) -> None:
        nonlocal generated, rows_done, last_report
        generated += len(out.tokens)
        row, samples = waiting[out.key[0]]
        samples.append((out.key[1], out.text, len(out.tokens)))
        if len(samples) < g["num_samples"]:
            return
        del waiting[row.row]
        rows_done += 1
        hooks.rows([RowResult(row.row, row.row * g["num_samples"] + k, row.prompt, written(row, text), "ok",
                              notes.get(row.row), row.row_id, n) for k, text, n in sorted(samples)])
        now = time.monotonic()
        if now - last_report >= 1.0 or not waiting:
            last_report = now
            hooks.metrics(rows_done, {"throughput/rows_per_s": rows_done / (now - start),
                                      "throughput/tokens_per_s": generated / (now - start)})

    checks = iter(range(1 << 62))  # a stop request is read every 16 calls (cheap, but not free)
    return run(requests, finished, lambda: next(checks) % 16 == 0 and bool(hooks.stop_requested()))
