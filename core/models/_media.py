"""What the media recipes (dcgan, vae, wavenet) share: loading for generation, prompts and file names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genq.core.api import Hooks, Sample, UnknownClasses
from genq.core.data.images import ImageSet, save_grid, save_png
from genq.core.eval.images import ImageClassifier, train_classifier
from genq.core.recipe import Recipe
from genq.core.sample import seeded_generator
from genq.core.spec import generate_params

MIN_PNG_SIDE = 64  # tiny images (digits are 16x16) are enlarged with nearest-neighbour to at least this


def load_for_generation(recipe: type[Recipe], source_workdir: Path, params: dict[str, Any], device: str
                        ) -> tuple[Any, dict[str, Any], torch.Generator]:
    """(the recipe's generation model, validated generation params, a CPU generator seeded from params['seed']
    or at random)."""
    g = generate_params(params)
    model = recipe.loaded(source_workdir, device)
    # Random numbers come from a CPU generator, so a seed gives the same samples on any device.
    return model, g, seeded_generator(g["seed"])


def names_per_class(classes: list[str], synonyms: dict[int, list[str]]) -> list[list[str]]:
    """class id -> every name it answers to (its folder name first)."""
    return [[c, *synonyms.get(i, [])] for i, c in enumerate(classes)]


def match_class(prompt: str, classes: list[str], synonyms: dict[int, list[str]]) -> int | None:
    """The class whose name or synonym equals the prompt (case and surrounding spaces ignored)."""
    key = " ".join(prompt.lower().split())
    for i, names in enumerate(names_per_class(classes, synonyms)):
        if key in (n.lower() for n in names):
            return i
    return None


def unknown_class(prompt: str, classes: list[str]) -> UnknownClasses:
    return unknown_classes([prompt], classes)


def unknown_classes(prompts: list[str], classes: list[str]) -> UnknownClasses:
    """The error for prompts that name no class of the model, naming (the first 5 of) them and its classes."""
    shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
    reasons = {p: f"the prompt {p!r} names no class of this model (classes: {shown})" for p in prompts}
    if len(prompts) == 1:
        return UnknownClasses(reasons[prompts[0]], reasons)
    named = ", ".join(repr(p) for p in prompts[:5]) + (", ..." if len(prompts) > 5 else "")
    return UnknownClasses(f"{len(prompts)} prompts name no class of this model: {named} (classes: {shown})", reasons)


def check_classes(prompts: list[str | None], classes: list[str], synonyms: dict[int, list[str]]) -> None:
    """Raise unknown_classes for the prompts (None aside) that name no class: before anything is generated, not
    after the prompts before them."""
    unknown = [p for p in dict.fromkeys(prompts) if p is not None and match_class(p, classes, synonyms) is None]
    if unknown:
        raise unknown_classes(unknown, classes)


def png_scale(image_size: int) -> int:
    return max(1, MIN_PNG_SIDE // image_size)


def image_samples(images: torch.Tensor, prompt: str | None, folder: Path, stem: str) -> list[Sample]:
    """One PNG per image (B, C, S, S) in [0, 1], named by index: file names never come from prompts."""
    scale = png_scale(images.shape[-1])
    return [Sample(kind="image", prompt=prompt, path=save_png(img, folder / f"{stem}-{j:03d}.png", scale))
            for j, img in enumerate(images)]


def grid_sample(images: torch.Tensor, prompt: str | None, path: Path, nrow: int = 8) -> Sample:
    """A grid PNG of a batch as one Sample."""
    path = save_grid(images, path, nrow=nrow, scale=png_scale(images.shape[-1]))
    return Sample(kind="image", prompt=prompt, path=path)


def evaluation_classifier(fit: ImageSet, held: ImageSet | None, steps: int, seed: int, hooks: Hooks,
                          step: int) -> ImageClassifier:
    """The evaluation CNN fitted on `fit` (a stop request ends the fit: the run stops at its first step); its
    accuracy on labelled `held` images is recorded and logged."""
    if fit.labels is not None:
        hooks.log(f"fitting the evaluation classifier on {len(fit.labels)} labelled images ({steps} steps)")
    clf = train_classifier(fit, steps, seed, stop=hooks.stop_requested)
    if held is not None and held.labels is not None:
        acc = clf.accuracy(held.floats(), held.labels)
        hooks.metrics(step, {"eval/classifier_accuracy": acc})
        hooks.log(f"evaluation classifier: {acc:.1%} accuracy on held-out real images")
    return clf
