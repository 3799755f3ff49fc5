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

from genq.core import checkpoint, nets
from genq.core import train as loop
from genq.core.api import DataError, DataSource, Hooks, Sample, TrainResult, each_prompt
from genq.core.data.images import load_images
from genq.core.eval.images import features_and_probs, frechet_distance
from genq.core.nets.vae import VAE, VAEConfig, loss_terms, vae_loss
from genq.core.recipes import _media
from genq.jobs.params import validate_train_params

KIND = "vae"
CLASSIFIER_STEPS = 300  # the evaluation CNN (tests lower this)
EVAL_SAMPLES = 500
BATCH = 256

def train(params: dict[str, Any], data: DataSource, workdir: Path, hooks: Hooks, device: str) -> TrainResult:
    """Train (or resume) a VAE on an images dataset; finish with samples, reconstructions and eval metrics."""
    p = validate_train_params(KIND, params)
    ckpt = checkpoint.load_latest(workdir, KIND)
    ds = load_images(data, ckpt.config["image_size"] if ckpt is not None else p["image_size"], KIND)
    if len(ds.images) < 2:
        raise DataError("a vae needs at least 2 images (one is held out for validation)")
    fit, val = ds.split(0.1, p["seed"])
    config = ckpt.config if ckpt is not None else asdict(VAEConfig(
        image_size=ds.image_size, channels=ds.channels, z_dim=p["z_dim"], base_channels=p["base_channels"]))
    if config["channels"] != ds.channels:
        raise DataError("the dataset no longer matches the checkpoint being resumed (channels changed)")

    torch.manual_seed(p["seed"])
    net = VAE(VAEConfig(**config)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=p["lr"])
    batches = torch.Generator().manual_seed(p["seed"])
    start = 0
    if ckpt is not None:
        start = ckpt.restore({"model": net}, {"optimizer": opt})
        batches.set_state(ckpt.state["batches"])
        hooks.log(f"resumed from the checkpoint at step {start}")
    else:
        hooks.log(f"vae: {ds.image_size}x{ds.image_size}x{ds.channels}, {len(fit.images)} training and "
                  f"{len(val.images)} validation images, {nets.size(net)}")

    x_fit, x_val = fit.floats(), val.floats()
    clf = _media.evaluation_classifier(fit, val, CLASSIFIER_STEPS, p["seed"], hooks, start)
    f_real, _ = features_and_probs(clf, x_fit[:2000])

    def step_fn(step: int) -> dict[str, float]:
        x = x_fit[torch.randint(len(x_fit), (p["batch_size"],), generator=batches)].to(device)
        loss, parts = vae_loss(net, x, p["beta"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), **parts}

    @torch.no_grad()
    def eval_fn(step: int) -> dict[str, float]:
        net.eval()
        recon_sum, kl_sum, recs = 0.0, 0.0, []
        gen = torch.Generator().manual_seed(p["seed"] + 1)
        for i in range(0, len(x_val), BATCH):
            x = x_val[i:i + BATCH].to(device)
            mu, logvar = net.encode(x)
            z = mu + torch.randn(mu.shape, generator=gen).to(device) * torch.exp(0.5 * logvar)
            recon, kl = loss_terms(net.decode_logits(z), x, mu, logvar)
            recon_sum, kl_sum = recon_sum + recon.sum().item(), kl_sum + kl.sum().item()
            recs.append(net.decode(mu).cpu())
        n = len(x_val)
        rec = torch.cat(recs)
        out = {"val/loss": (recon_sum + p["beta"] * kl_sum) / n, "eval/elbo": -(recon_sum + kl_sum) / n,
               "eval/reconstruction_error": ((rec - x_val) ** 2).mean().item()}
        if val.labels is not None:
            out["eval/reconstruction_accuracy"] = clf.accuracy(rec, val.labels)
        f_fake, _ = features_and_probs(clf, _sample(net, EVAL_SAMPLES, gen, device))
        out["eval/fid"] = frechet_distance(f_real, f_fake)
        net.train()
        return out

    def save_fn(step: int) -> Path:
        return checkpoint.save(workdir, step, {"model": net}, {
            "kind": KIND, "config": config, "params": p, "optimizer": opt.state_dict(),
            "batches": batches.get_state(), "rng": checkpoint.rng_state()})

    result = loop.run(step_fn, hooks, max_steps=p["max_steps"], start_step=start, save_fn=save_fn,
                      checkpoint_interval=p["checkpoint_interval"], eval_fn=eval_fn,
                      eval_interval=p["eval_interval"], items_per_step=p["batch_size"],
                      throughput_metric="throughput/samples_per_s")
    if result.stopped:
        return result
    folder = workdir / "samples"
    gen = torch.Generator().manual_seed(p["seed"] + 2)
    samples = _sample(net, 64, gen, device)
    originals = x_val[:32]
    pairs = torch.stack([originals, net.reconstruct(originals.to(device)).cpu()], dim=1).flatten(0, 1)
    result.samples = [_media.grid_sample(samples, None, folder / "grid.png"),
                      _media.grid_sample(pairs, "reconstructions", folder / "reconstructions.png"),
                      *_media.image_samples(samples[:8], None, folder, "sample")]
    return result


def generate(source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
             hooks: Hooks, device: str) -> list[Sample]:
    """num_samples PNG images per prompt, decoded from the prior (the VAE takes no condition)."""
    ckpt, g, gen = _media.load_for_generation(KIND, source_workdir, params)
    net = VAE(VAEConfig(**ckpt.config)).to(device)
    ckpt.load_into({"model": net})

    def make(i: int, prompt: str | None) -> list[Sample]:
        if prompt:
            hooks.log(f"a vae is unconditional: the prompt {prompt!r} is ignored")
        return _media.image_samples(_sample(net, g["num_samples"], gen, device), prompt, out_dir, f"{i:04d}")

    return each_prompt(prompts, hooks, make)


@torch.no_grad()
def _sample(net: VAE, n: int, gen: torch.Generator, device: str) -> torch.Tensor:
    """n images (n, C, S, S) in [0, 1] decoded from z ~ N(0, I) drawn on the CPU (device-independent)."""
    net.eval()
    z = torch.randn(n, net.cfg.z_dim, generator=gen)
    return torch.cat([net.decode(z[i:i + BATCH].to(device)).cpu() for i in range(0, n, BATCH)])
