"""The `vae` recipe: a convolutional VAE on images (Adam, loss = reconstruction + beta * KL).

10% of the images are held out for validation. Metrics: train/loss, train/recon, train/kl,
throughput/samples_per_s, val/loss (the training objective on the held-out images), and eval/elbo (nats
per image, one-sample estimate), eval/reconstruction_error (per-pixel MSE of mean reconstructions),
eval/reconstruction_accuracy (the dataset's CNN classifier on reconstructions, labelled data only) and
eval/fid of samples from the prior (descriptions in genq.core.eval.images.METRIC_DESCRIPTIONS).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from genq.core import checkpoint
from genq.core.api import DataError, DataSource, Hooks, Sample, TrainResult, each_prompt
from genq.core.data.images import load_images
from genq.core.device import to_device
from genq.core.eval.images import features_and_probs, frechet_distance
from genq.core.models import _media
from genq.core.models._image_params import check_images
from genq.core.models.vae import TWO_IMAGES
from genq.core.models.vae.net import VAE, VAEConfig, loss_terms, vae_loss
from genq.core.recipe import GALLERY_SEED, Recipe

CLASSIFIER_STEPS = 300  # the evaluation CNN (tests lower this)
EVAL_SAMPLES = 500
BATCH = 256
GALLERY_IMAGES = 32  # decoded from the prior after each evaluation

class VAERecipe(Recipe):
    kind = "vae"

    def build(self, data: DataSource, resumed: checkpoint.Checkpoint | None) -> None:
        p = self.p
        ds = load_images(data, resumed.config["image_size"] if resumed is not None else p["image_size"], self.kind)
        check_images({"images": len(ds.images)}, self.kind, TWO_IMAGES)
        self.fit_set, self.val = ds.split(0.1, p["seed"])
        self.config = resumed.config if resumed is not None else asdict(VAEConfig(
            image_size=ds.image_size, channels=ds.channels, z_dim=p["z_dim"], base_channels=p["base_channels"]))
        if self.config["channels"] != ds.channels:
            raise DataError("the dataset no longer matches the checkpoint being resumed (channels changed)")
        self.net = VAE(VAEConfig(**self.config)).to(self.device)
        self.modules = {"model": self.net}
        self.optimizers = {"optimizer": torch.optim.Adam(self.net.parameters(), lr=p["lr"])}
        self.batches = torch.Generator().manual_seed(p["seed"])
        self.x_fit, self.x_val = self.fit_set.floats(), self.val.floats()

    def describe(self) -> str:
        s = self.config["image_size"]
        return (f"vae: {s}x{s}x{self.config['channels']}, {len(self.x_fit)} training and {len(self.x_val)} "
                "validation images")

    def extra_state(self) -> dict[str, Any]:
        return {"batches": self.batches.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.batches.set_state(state["batches"])

    def prepare(self, start: int) -> None:
        self.clf = _media.evaluation_classifier(self.fit_set, self.val, CLASSIFIER_STEPS, self.p["seed"],
                                                self.hooks, start)
        self.f_real, _ = features_and_probs(self.clf, self.x_fit[:2000])

    def step(self, step: int) -> dict[str, torch.Tensor]:
        x = self.x_fit[torch.randint(len(self.x_fit), (self.p["batch_size"],), generator=self.batches)]
        loss, parts = vae_loss(self.net, to_device(x, self.device), self.p["beta"])
        opt = self.optimizers["optimizer"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), **parts}

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        net, x_val, beta = self.net, self.x_val, self.p["beta"]
        net.eval()
        recon_sum, kl_sum, recs = 0.0, 0.0, []
        gen = torch.Generator().manual_seed(self.p["seed"] + 1)
        for i in range(0, len(x_val), BATCH):
            x = x_val[i:i + BATCH].to(self.device)
            mu, logvar = net.encode(x)
            z = mu + torch.randn(mu.shape, generator=gen).to(self.device) * torch.exp(0.5 * logvar)
            recon, kl = loss_terms(net.decode_logits(z), x, mu, logvar)
            recon_sum, kl_sum = recon_sum + recon.sum().item(), kl_sum + kl.sum().item()
            recs.append(net.decode(mu).cpu())
        n = len(x_val)
        rec = torch.cat(recs)
        out = {"val/loss": (recon_sum + beta * kl_sum) / n, "eval/elbo": -(recon_sum + kl_sum) / n,
               "eval/reconstruction_error": ((rec - x_val) ** 2).mean().item()}
        if self.val.labels is not None:
            out["eval/reconstruction_accuracy"] = self.clf.accuracy(rec, self.val.labels)
        f_fake, _ = features_and_probs(self.clf, _sample(net, EVAL_SAMPLES, gen, self.device))
        out["eval/fid"] = frechet_distance(self.f_real, f_fake)
        net.train()
        return out

    def gallery(self, step: int, folder: Path) -> list[Sample]:
        """One grid decoded from the same prior latents at every step."""
        images = _sample(self.net, GALLERY_IMAGES, torch.Generator().manual_seed(self.p["seed"] + GALLERY_SEED),
                         self.device)
        self.net.train()
        return [_media.grid_sample(images, None, folder / "grid.png")]

    def finish(self, result: TrainResult, folder: Path) -> list[Sample]:
        samples = _sample(self.net, 64, torch.Generator().manual_seed(self.p["seed"] + 2), self.device)
        originals = self.x_val[:32]
        pairs = torch.stack([originals, self.net.reconstruct(originals.to(self.device)).cpu()], dim=1).flatten(0, 1)
        return [_media.grid_sample(samples, None, folder / "grid.png"),
                _media.grid_sample(pairs, "reconstructions", folder / "reconstructions.png"),
                *_media.image_samples(samples[:8], None, folder, "sample")]

    @classmethod
    def generate(cls, source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
                 hooks: Hooks, device: str) -> list[Sample]:
        """num_samples PNG images per prompt, decoded from the prior (the VAE takes no condition)."""
        net, g, gen = _media.load_for_generation(cls, source_workdir, params, device)

        def make(i: int, prompt: str | None) -> list[Sample]:
            if prompt:
                hooks.log(f"a vae is unconditional: the prompt {prompt!r} is ignored")
            return _media.image_samples(_sample(net, g["num_samples"], gen, device), prompt, out_dir, f"{i:04d}")

        return each_prompt(prompts, hooks, make)

    @classmethod
    def generation_model(cls, ckpt: checkpoint.Checkpoint, device: str) -> VAE:
        net = VAE(VAEConfig(**ckpt.config)).to(device)
        ckpt.load_into({"model": net})
        return net.eval()


@torch.no_grad()
def _sample(net: VAE, n: int, gen: torch.Generator, device: str) -> torch.Tensor:
    """n images (n, C, S, S) in [0, 1] decoded from z ~ N(0, I) drawn on the CPU (device-independent)."""
    net.eval()
    z = torch.randn(n, net.cfg.z_dim, generator=gen)
    return torch.cat([net.decode(z[i:i + BATCH].to(device)).cpu() for i in range(0, n, BATCH)])
