"""The `dcgan` recipe: a DCGAN on images, unconditional or conditioned on a class or a text prompt.

Adam(lr, betas=(0.5, 0.999)) for both nets, one discriminator and one generator step per iteration
(Radford et al.). conditional="class": prompts are class names (or synonyms such as "seven");
conditional="prompt": a small text encoder, trained first on templated captions of the class names,
maps free text to a class distribution that conditions the generator. A prompt the encoder matches to no
class with confidence >= PROMPT_CONFIDENCE still yields images (drawn from its best guess, a mix of
classes) and logs a warning naming the prompt.

Metrics: train/loss (d_loss + g_loss), train/d_loss, train/g_loss, train/d_real and train/d_fake (the
discriminator's mean probability on real and generated batches), throughput/samples_per_s, and
eval/fid, eval/inception_score, eval/class_accuracy (see genq.core.eval.images).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from genq.core import checkpoint
from genq.core.api import DataError, DataSource, Hooks, Sample, TrainResult, each_prompt
from genq.core.data.images import ImageSet, load_images
from genq.core.device import to_device
from genq.core.eval.images import image_metrics
from genq.core.models import _media
from genq.core.models._image_params import check_images
from genq.core.models.dcgan import TWO_IMAGES
from genq.core.models.dcgan.net import DCGANConfig, Discriminator, Generator, d_loss, g_loss
from genq.core.models.dcgan.text_encoder import TextEncoder, TextEncoderConfig, train_text_encoder
from genq.core.recipe import GALLERY_SEED, Recipe

CLASSIFIER_STEPS = 300  # the evaluation CNN (tests lower these)
TEXT_ENCODER_STEPS = 400
EVAL_SAMPLES = 500
PROMPT_CONFIDENCE = 0.5
BATCH = 256  # images generated at once
GALLERY_IMAGES = 32  # about this many in the grid drawn after each evaluation


class DCGANRecipe(Recipe):
    kind = "dcgan"

    def build(self, data: DataSource, resumed: checkpoint.Checkpoint | None) -> None:
        p = self.p
        self.mode = resumed.state["conditional"] if resumed is not None else p["conditional"]  # a resumed job keeps it
        ds = self.ds = load_images(data, resumed.config["image_size"] if resumed is not None else p["image_size"],
                                   self.kind)
        check_images({"images": len(ds.images), "classes": ds.labels is not None}, self.kind, TWO_IMAGES,
                     labelled=self.mode != "none")
        self.n_classes = len(ds.classes) if self.mode != "none" else 0
        self.config = resumed.config if resumed is not None else asdict(DCGANConfig(
            image_size=ds.image_size, channels=ds.channels, z_dim=p["z_dim"], base_channels=p["base_channels"],
            n_classes=self.n_classes))
        if self.config["channels"] != ds.channels or self.config["n_classes"] != self.n_classes:
            raise DataError("the dataset no longer matches the checkpoint being resumed (channels or classes changed)")
        cfg = DCGANConfig(**self.config)
        self.G, self.D = Generator(cfg).to(self.device), Discriminator(cfg).to(self.device)
        self.modules = {"generator": self.G, "discriminator": self.D}
        self.optimizers = {"opt_g": torch.optim.Adam(self.G.parameters(), lr=p["lr"], betas=(0.5, 0.999)),
                           "opt_d": torch.optim.Adam(self.D.parameters(), lr=p["lr"], betas=(0.5, 0.999))}
        if self.mode == "prompt":
            if resumed is not None:
                self.modules["text"] = TextEncoder(TextEncoderConfig(**resumed.state["text_config"]))
            else:
                self.hooks.log("training the prompt encoder on captions of the class names")
                # A few seconds: not interrupted, so a checkpoint never holds a half-trained encoder.
                self.modules["text"] = train_text_encoder(_media.names_per_class(ds.classes, ds.synonyms),
                                                          TEXT_ENCODER_STEPS, p["seed"])
        self.batches = torch.Generator().manual_seed(p["seed"])
        self.real_all = ds.floats()

    def describe(self) -> str:
        ds = self.ds
        return f"dcgan ({self.mode}): {ds.image_size}x{ds.image_size}x{ds.channels}, {len(ds.images)} images"

    def extra_state(self) -> dict[str, Any]:
        text = self.modules.get("text")
        return {"conditional": self.mode, "classes": self.ds.classes, "synonyms": self.ds.synonyms,
                "text_config": asdict(text.cfg) if text is not None else None, "batches": self.batches.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.batches.set_state(state["batches"])

    def prepare(self, start: int) -> None:
        ds = self.ds
        fit_set, held = ds.split(0.1, self.p["seed"]) if ds.labels is not None else (ds, None)
        self.clf = _media.evaluation_classifier(fit_set, held, CLASSIFIER_STEPS, self.p["seed"], self.hooks, start)

    def step(self, step: int) -> dict[str, torch.Tensor]:
        G, D, n, bs, dev = self.G, self.D, self.n_classes, self.p["batch_size"], self.device
        idx = torch.randint(len(self.real_all), (bs,), generator=self.batches)
        real = to_device(self.real_all[idx] * 2 - 1, dev)
        labels = to_device(self.ds.labels[idx], dev) if n else None
        cond = F.one_hot(labels, n).float() if n else None
        fake = G(torch.randn(bs, self.config["z_dim"], device=dev), cond)
        ld, sd = d_loss(D, real, fake, cond, labels)
        opt_g, opt_d = self.optimizers["opt_g"], self.optimizers["opt_d"]
        opt_d.zero_grad(set_to_none=True)
        ld.backward()
        opt_d.step()
        lg, _ = g_loss(D, fake, cond, labels)
        opt_g.zero_grad(set_to_none=True)
        lg.backward()
        opt_g.step()
        ld, lg = ld.detach(), lg.detach()  # tensors: the loop reads them at log steps, not every step
        return {"loss": ld + lg, "d_loss": ld, "g_loss": lg, "d_real": sd["d_real"], "d_fake": sd["d_fake"]}

    def evaluate(self, step: int) -> dict[str, float]:
        n = self.n_classes
        requested = torch.arange(EVAL_SAMPLES) % n if n else None
        fake = _draw(self.G, EVAL_SAMPLES, torch.Generator().manual_seed(self.p["seed"] + 1), self.device,
                     _onehot(requested, n))
        metrics = image_metrics(self.clf, self.real_all[:2000], fake, self.ds.labels is not None, requested)
        self.G.train()
        return metrics

    def gallery(self, step: int, folder: Path) -> list[Sample]:
        """One grid from the same latents at every step; a conditional model's columns are its classes."""
        n = self.n_classes
        cols = n if 0 < n <= 16 else 8
        count = cols * max(1, GALLERY_IMAGES // cols)
        requested = torch.arange(count) % n if n else None
        images = _draw(self.G, count, torch.Generator().manual_seed(self.p["seed"] + GALLERY_SEED), self.device,
                       _onehot(requested, n))
        self.G.train()
        return [_media.grid_sample(images, None, folder / "grid.png", nrow=cols)]

    def finish(self, result: TrainResult, folder: Path) -> list[Sample]:
        return _final_samples(self.G, self.ds, self.n_classes, self.p["seed"], folder, self.device)

    @classmethod
    def generate(cls, source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
                 hooks: Hooks, device: str) -> list[Sample]:
        """num_samples PNG images per prompt: a class name or text (conditional models) or None."""
        (modules, mode, classes, synonyms), g, gen = _media.load_for_generation(cls, source_workdir, params, device)
        G, n_classes, n = modules["generator"], modules["generator"].cfg.n_classes, g["num_samples"]
        if n_classes and mode == "class":
            _media.check_classes(prompts, classes, synonyms)

        def make(i: int, prompt: str | None) -> list[Sample]:
            if n_classes == 0 or prompt is None:
                if prompt is not None:
                    hooks.log(f"this dcgan is unconditional: the prompt {prompt!r} is ignored")
                requested = torch.randint(n_classes, (n,), generator=gen) if n_classes else None
                images = _draw(G, n, gen, device, _onehot(requested, n_classes))
            else:
                cond = _condition(prompt, mode, classes, synonyms, modules.get("text"), hooks)
                images = _draw(G, n, gen, device, cond.expand(n, -1))
            return _media.image_samples(images, prompt, out_dir, f"{i:04d}")

        return each_prompt(prompts, hooks, make)

    @classmethod
    def generation_model(cls, ckpt: checkpoint.Checkpoint, device: str) -> tuple[dict[str, torch.nn.Module], str,
                                                                                 list[str], dict[int, list[str]]]:
        """(the generator and, for prompts, the text encoder, in eval mode; the conditioning mode; class names;
        their synonyms)."""
        modules: dict[str, torch.nn.Module] = {"generator": Generator(DCGANConfig(**ckpt.config)).to(device)}
        if ckpt.state["conditional"] == "prompt":
            modules["text"] = TextEncoder(TextEncoderConfig(**ckpt.state["text_config"])).to(device)
        ckpt.load_into(modules)
        for module in modules.values():
            module.eval()
        return modules, ckpt.state["conditional"], ckpt.state["classes"], ckpt.state["synonyms"]


def _condition(prompt: str, mode: str, classes: list[str], synonyms: dict[int, list[str]],
               text: TextEncoder | None, hooks: Hooks) -> torch.Tensor:
    """The class distribution (1, n_classes) a prompt asks for."""
    cls = _media.match_class(prompt, classes, synonyms)
    if cls is not None:
        return F.one_hot(torch.tensor([cls]), len(classes)).float()
    if mode == "class" or text is None:
        raise _media.unknown_class(prompt, classes)
    cond, conf = text.encode([prompt])
    best = int(cond.argmax())
    if conf.item() < PROMPT_CONFIDENCE:
        hooks.log(f"warning: the prompt {prompt!r} matches no class well (best: {classes[best]!r}, "
                  f"confidence {conf.item():.2f}); drawing from the encoder's mix of classes")
    else:
        hooks.log(f"prompt {prompt!r} -> class {classes[best]!r} (confidence {conf.item():.2f})")
    return cond.cpu()


@torch.no_grad()
def _draw(G: Generator, n: int, gen: torch.Generator, device: str, cond: torch.Tensor | None = None) -> torch.Tensor:
    """n images (n, C, S, S) in [0, 1] on the CPU; cond (n, n_classes) for a conditional generator."""
    G.eval()
    z = torch.randn(n, G.cfg.z_dim, generator=gen)  # drawn on the CPU: same seed, same images on any device
    out = [G(z[i:i + BATCH].to(device), None if cond is None else cond[i:i + BATCH].to(device))
           for i in range(0, n, BATCH)]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1).cpu()


def _onehot(ids: torch.Tensor | None, n_classes: int) -> torch.Tensor | None:
    return None if ids is None else F.one_hot(ids, n_classes).float()


def _final_samples(G: Generator, ds: ImageSet, n_classes: int, seed: int, folder: Path, device: str) -> list[Sample]:
    """A grid (8 per class, or 64) and one PNG per class (or 8 PNGs) under workdir/samples/."""
    gen = torch.Generator().manual_seed(seed + 2)
    if n_classes:
        grid = _draw(G, 8 * n_classes, gen, device, _onehot(torch.arange(n_classes).repeat_interleave(8), n_classes))
        samples = [_media.grid_sample(grid, None, folder / "grid.png")]
        for c in range(n_classes):
            samples += _media.image_samples(grid[8 * c:8 * c + 1], ds.classes[c], folder, f"class-{c:03d}")
        return samples
    grid = _draw(G, 64, gen, device)
    return [_media.grid_sample(grid, None, folder / "grid.png"),
            *_media.image_samples(grid[:8], None, folder, "sample")]
