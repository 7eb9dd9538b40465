"""Adversarial examples: computed ones (FGSM and PGD, with torchattacks) and natural ones (ImageNet-A)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from transmix.config.robustness import ATTACKS, Protocol
from transmix.config.strict import ConfigError
from transmix.data.imagefolder import list_images, random_subset
from transmix.robustness.context import Context, Rows, logged, row
from transmix.training.runtime import autocast


class PixelSpace(nn.Module):
    """A model that takes pixel values in [0, 1] and normalises them itself, as torchattacks expects.

    Attacks then perturb, clip and bound epsilon in pixel space, where ``8/255`` means eight 8-bit steps.
    """

    def __init__(self, model: nn.Module, normalise: Callable[[torch.Tensor], torch.Tensor], precision: str = "fp32"):
        super().__init__()
        self.model = model
        self.normalise = normalise
        self.precision = precision
        # Take the model's mode: a new module is in training mode, and torchattacks "restores" a wrapper found in
        # training mode by calling .train() on it after the attack, which would switch the wrapped model's drop-path
        # on for everything that follows.
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, self.precision):
            logits = self.model(self.normalise(x))
        return logits.float()


def attack(model: PixelSpace, name: str, eps: float, pixels: torch.Tensor, labels: torch.Tensor, seed: int,
           protocol: Protocol) -> torch.Tensor:  # fmt: skip
    """Adversarial pixels (in [0, 1], within ``eps`` of ``pixels`` in L-inf) from torchattacks' FGSM or PGD.

    PGD's random start draws from torch's global RNG; it is seeded with ``seed`` inside ``torch.random.fork_rng``,
    so the result is reproducible and the caller's global RNG state is left as it was.
    """
    import torchattacks

    if name == "fgsm":
        atk = torchattacks.FGSM(model, eps=eps)
    elif name == "pgd":
        atk = torchattacks.PGD(model, eps=eps, alpha=protocol.pgd_alpha * eps, steps=protocol.pgd_steps,
                               random_start=protocol.pgd_random_start)  # fmt: skip
    else:
        raise ConfigError(f"attack {name!r} is not one of {', '.join(ATTACKS)}")
    devices = list(range(torch.cuda.device_count())) if pixels.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return atk(pixels, labels).detach()


def adversarial(ctx: Context) -> Rows:
    """Top-1 under untargeted FGSM and PGD (cross-entropy on the true label, every image attacked, including
    those already misclassified); ``setting`` = attack, ``level`` = epsilon in pixel units."""
    protocol, test = ctx.protocol, ctx.data.head(ctx.protocol.adversarial_images)
    pixels = test.pixels().float() / 255.0
    starts = range(0, len(test), protocol.batch_size)
    wrapped = {variant: PixelSpace(model, test.normalise, ctx.precision) for variant, model in ctx.models.items()}
    out: Rows = []
    for name in protocol.adversarial_attacks:
        for eps in protocol.adversarial_epsilons:
            seeds = torch.randint(0, 2**62, (len(starts),), generator=ctx.gen).tolist()  # shared by the variants
            for variant, model in wrapped.items():
                adv = []
                for start, seed in zip(starts, seeds, strict=True):
                    part = slice(start, start + protocol.batch_size)
                    x, y = pixels[part].to(ctx.device), test.labels[part].to(ctx.device)
                    adv.append(attack(model, name, eps, x, y, seed, protocol).cpu())
                value = ctx.top1(ctx.models[variant], test.normalise(torch.cat(adv)), test.labels)
                out += logged([row("adversarial", name, eps, variant, "top1", value, len(test))])
    return out


def natural(ctx: Context) -> Rows:
    """Top-1 on natural adversarial examples (ImageNet-A, ``natural_dir``), the arg-max taken over the logits of
    their classes only; ``setting`` = the folder's name, ``n`` = the images read.

    ImageNet-A holds 200 of ImageNet's 1000 classes, and its authors score a 1000-class model on those 200 logits
    (timm ships the 200 as ``imagenet_a_indices.txt``). The folder's class folders are matched by name to the run's
    classes (the folders of its ``train/``), which gives exactly those indices for an ImageNet run.

    Raises:
        ConfigError: a class folder the run did not train on.
    """
    files, folder = ctx.data.files, Path(ctx.protocol.natural_dir)
    samples, found = list_images(folder)
    columns = class_columns(list(found), files.classes, f"natural_dir {folder}")
    samples = random_subset(samples, ctx.protocol.natural_images, ctx.gen)
    correct = dict.fromkeys(ctx.models, 0)
    for x, y in files.batches(samples, ctx.protocol.batch_size):
        for variant, model in ctx.models.items():
            correct[variant] += int((ctx.logits(model, x)[:, columns].argmax(dim=1) == y).sum())
    n = len(samples)
    return [row("natural", folder.name, math.nan, v, "top1", 100.0 * c / n, n) for v, c in correct.items()]


def class_columns(names: list[str], classes: dict[str, int], what: str) -> torch.Tensor:
    """The logit index of every class name in ``names``, from the run's ``classes`` (folder name -> label).

    Raises:
        ConfigError: a name is not one of the run's classes; the message lists the first few.
    """
    unknown = [name for name in names if name not in classes]
    if unknown:
        listed = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ConfigError(f"{what} has {len(unknown)} class folder(s) the run did not train on ({listed}); name them "
                          "as the run's classes (its train/ folders, e.g. ImageNet wnids)")  # fmt: skip
    return torch.tensor([classes[name] for name in names])
