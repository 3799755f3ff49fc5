"""Image quality metrics on the features and logits of a small CNN trained on the dataset itself.

Real Inception-v3 weights are not available offline, so eval/fid and eval/inception_score here use the
same formulas (Heusel et al. 2017; Salimans et al. 2016) on a small classifier fitted to the training
images. The numbers compare runs on the same dataset; they are not comparable to published FID/IS.
For a dataset without labels the classifier cannot be trained: FID then uses the features of a fixed,
randomly initialised CNN (seeded) and the class-based metrics are left out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from genq.core.data.images import ImageSet

METRIC_DESCRIPTIONS = {
    "eval/fid": "Frechet distance between generated and real images in the feature space of a small CNN "
                "classifier trained on this dataset (not Inception); lower is better",
    "eval/inception_score": "exp(E KL(p(y|x) || p(y))) of the dataset's own CNN classifier over generated "
                            "images (not Inception); higher is better, at most the number of classes",
    "eval/class_accuracy": "fraction of generated images the dataset's CNN classifier assigns to the "
                           "requested class",
    "eval/classifier_accuracy": "validation accuracy of that CNN classifier on real images (the ceiling "
                                "for class_accuracy)",
    # VAE
    "eval/elbo": "evidence lower bound on log p(x), nats per held-out image (Bernoulli pixels); higher is better",
    "eval/reconstruction_error": "mean squared error per pixel (in [0, 1]) of reconstructions of held-out images",
    "eval/reconstruction_accuracy": "fraction of reconstructions of held-out images that the dataset's CNN "
                                    "classifier labels like the original",
}


class ImageClassifier(nn.Module):
    """conv-pool-conv-pool-fc: `features` is the 128-d penultimate layer used for FID."""

    def __init__(self, channels: int, n_classes: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, max(n_classes, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, S) in [0, 1] -> (B, 128)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """Class ids (B,) for images in [0, 1]."""
        return torch.cat([self(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of images predicted as `labels`."""
        return (self.predict(x) == labels).float().mean().item()


STOP_EVERY = 50  # classifier steps between stop checks: a few seconds at most


def train_classifier(data: ImageSet, steps: int = 300, seed: int = 0, batch_size: int = 128,
                     stop: Callable[[], str | None] | None = None) -> ImageClassifier:
    """Fit the evaluation CNN on labelled images (light noise and shift augmentation); random CNN if unlabelled.
    A batch holds at most `batch_size` images of 32 x 32 pixels' worth (at 256 x 256, 128 images a batch took
    minutes and 4 GB); `stop()` is asked every STOP_EVERY steps, and ends the fit when it gives a reason."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeds its weights without moving the caller's (a resumed job's) RNG
        torch.manual_seed(seed)
        model = ImageClassifier(data.channels, len(data.classes))
    if data.labels is None:
        return model.eval()  # fixed random features for FID
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x_all = data.floats()
    batch_size = max(8, min(batch_size, batch_size * 32 * 32 // (x_all.shape[-1] * x_all.shape[-2])))
    for i in range(steps):
        if stop is not None and i and i % STOP_EVERY == 0 and stop():
            break
        idx = torch.randint(len(x_all), (batch_size,), generator=g)
        x = x_all[idx]
        dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
        x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
        x = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        loss = F.cross_entropy(model(x), data.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def features_and_probs(model: ImageClassifier, x: torch.Tensor, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 128), class probabilities (N, K)) as float64 arrays."""
    feats, probs = [], []
    for i in range(0, len(x), batch):
        f = model.features(x[i:i + batch])
        feats.append(f)
        probs.append(F.softmax(model.head(f), dim=1))
    return torch.cat(feats).double().numpy(), torch.cat(probs).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (N, D)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^(1/2)) = Tr((A S_b A)^(1/2)) with A = S_a^(1/2): symmetric, so eigh is stable even when
    # the covariances are singular (dead ReLU features), where sqrtm of the product is not.
    w, v = linalg.eigh(s_a)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(linalg.eigvalsh(half @ s_b @ half), 0, None)).sum()
    fid = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_covmean)
    return max(fid, 0.0)


def inception_score(probs: np.ndarray, splits: int = 1) -> float:
    """exp(E_x KL(p(y|x) || p(y))), averaged over `splits` chunks."""
    scores = []
    for part in np.array_split(probs, splits):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores))


def image_metrics(model: ImageClassifier, real: torch.Tensor, fake: torch.Tensor, labelled: bool,
                  requested: torch.Tensor | None = None) -> dict[str, float]:
    """eval/fid (+ eval/inception_score when labelled, + eval/class_accuracy for requested classes)."""
    f_real, _ = features_and_probs(model, real)
    f_fake, p_fake = features_and_probs(model, fake)
    out = {"eval/fid": frechet_distance(f_real, f_fake)}
    if labelled:
        out["eval/inception_score"] = inception_score(p_fake)
        if requested is not None:
            out["eval/class_accuracy"] = float((p_fake.argmax(1) == requested.numpy()).mean())
    return out
