"""Every random choice of one training image's augmentation, drawn on the host, as data.

The PIL path (:mod:`transmix.data.imagefolder`) runs timm's training transform under the seed
``stream_seed(seed, epoch, index)``: the crop box, the resize filter, the flips and RandAugment's ops and magnitudes
come from Python's, NumPy's and torch's global RNGs as timm's own code consumes them. The device path
(:mod:`transmix.data.device`) decodes and augments on the GPU, where those RNGs do not reach. So the host draws the
same choices here, in the same order from the same seeded RNGs, and hands them over as a :class:`Draw`: both paths
then apply one set of parameters, and only the pixels may differ (nvJPEG against libjpeg, GPU resampling).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from transmix.config.strict import ConfigError


@dataclass(frozen=True)
class Op:
    """One RandAugment op that fired, with what timm's level function made of its magnitude."""

    name: str  # timm's op name: "Rotate", "PosterizeIncreasing", "TranslateXRel", ...
    args: tuple[float, ...]  # the op's arguments after timm's level function (degrees, bits, factor, fraction...)
    resample: str = ""  # geometric ops: the filter timm chose ("nearest", "bilinear", "bicubic")
    fill: tuple[int, int, int] = (128, 128, 128)  # geometric ops: the colour of uncovered pixels


@dataclass(frozen=True)
class Draw:
    """One image's augmentation: crop the box, resize it with ``interpolation``, flip, then apply ``ops`` in order."""

    crop: tuple[int, int, int, int]  # (top, left, height, width) in the decoded image's pixels
    interpolation: str  # the crop's resize filter: "nearest", "bilinear" or "bicubic"
    hflip: bool
    vflip: bool
    ops: tuple[Op, ...]  # the RandAugment ops that fired, in the order they run


RAND_OPS = frozenset({
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "PosterizeIncreasing", "Solarize",
    "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast", "ContrastIncreasing", "Brightness",
    "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
})  # fmt: skip
"""The ops a :class:`Draw` may name: those of timm's ``rand-*`` policies with and without ``inc1`` (the weighted
``tweights`` set is drawn from them too); ``t3a``'s blur and desaturation are not among them."""

GEOMETRIC_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel"})
"""The ops timm hands a resampling filter (and on which it draws one per call when the policy's is random)."""

FILTERS = ("nearest", "bilinear", "bicubic")  # the resampling filters a Draw may name

PIL_ONLY = "use loader: pil"  # the way out named by every refusal


class _Header(Image.Image):
    """An image of ``size`` with no pixels: what timm's crop sampler reads (``F.get_image_size`` wants a PIL image)
    for an image known only from its file header."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self._size = (int(size[0]), int(size[1]))


def _filter_name(mode: Any) -> str:
    """``"bicubic"`` for torchvision's ``InterpolationMode.BICUBIC`` (the crop's) and PIL's ``Resampling.BICUBIC``
    (RandAugment's) alike."""
    value = getattr(mode, "value", mode)
    return value if isinstance(value, str) else Image.Resampling(value).name.lower()


def _refuse(setting: str, what: str) -> ConfigError:
    return ConfigError(f"{setting}: {what} is not reproduced by the device loader; {PIL_ONLY}")


def _steps(transform: Callable[[Image.Image], Any]) -> list[Any]:
    steps = getattr(transform, "transforms", None)
    if steps is None:
        raise _refuse("transform", f"{type(transform).__name__} (not a Compose of timm's training steps)")
    return list(steps)


def check_supported(transform: Callable[[Image.Image], Any]) -> None:
    """Refuse a training transform whose random steps :func:`draw` cannot hand to the device; once per run.

    Args:
        transform: what :func:`transmix.data.imagefolder.train_transform` returns.

    Raises:
        ConfigError: one line naming the setting behind the step (``color_jitter``, ``aa``,
            ``train_interpolation``, ``img_size``) and saying to use ``loader: pil``.
    """
    from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
    from timm.data.transforms import MaybePILToTensor, RandomResizedCropAndInterpolation
    from torchvision import transforms as T

    for step in _steps(transform):
        if isinstance(step, RandomResizedCropAndInterpolation):
            modes = step.interpolation if isinstance(step.interpolation, (tuple, list)) else (step.interpolation,)
            names = [_filter_name(mode) for mode in modes]
            if any(name not in FILTERS for name in names):
                raise _refuse("train_interpolation", f"the {'/'.join(names)} resize")
            if step.size[0] != step.size[1]:
                raise _refuse("img_size", f"a {step.size[0]}x{step.size[1]} crop (square crops only)")
        elif isinstance(step, RandAugment):
            for op in step.ops:
                if op.name not in RAND_OPS:
                    raise _refuse("aa", f"RandAugment's {op.name} op")
                resample = op.kwargs.get("resample")
                names = [_filter_name(m) for m in (resample if isinstance(resample, (tuple, list)) else (resample,))]
                if op.name in GEOMETRIC_OPS and any(name not in FILTERS for name in names):
                    raise _refuse("train_interpolation", f"RandAugment's {'/'.join(names)} resampling")
        elif any(isinstance(t, T.ColorJitter) for t in [step, *getattr(step, "transforms", ())]):  # RandomApply
            raise _refuse("color_jitter", "colour jitter (timm adds it when aa is empty; color_jitter=0 drops it)")
        elif isinstance(step, (AutoAugment, AugMixAugment)):
            raise _refuse("aa", f"{type(step).__name__} (only RandAugment, aa=rand-..., is)")
        elif not isinstance(step, (T.RandomHorizontalFlip, T.RandomVerticalFlip, MaybePILToTensor)):
            raise _refuse("transform", f"the {type(step).__name__} step")


def draw(transform: Callable[[Image.Image], Any], size: tuple[int, int], seed: int) -> Draw:
    """One image's augmentation as the PIL path draws it under ``seeded_rngs(seed)``, from the image's size alone.

    Args:
        transform: what :func:`transmix.data.imagefolder.train_transform` returns; every parameter (crop ranges,
            filters, flip probabilities, RandAugment's ops, magnitudes and choice weights) is read from its steps.
        size: the decoded image's ``(width, height)``, as PIL reports it (a JPEG header tells it).
        seed: the image's seed, ``stream_seed(seed, epoch, index)``.
    """
    from transmix.data.loader import seeded_rngs

    with seeded_rngs(seed):
        return draw_from_rngs(transform, size)


def draw_from_rngs(transform: Callable[[Image.Image], Any], size: tuple[int, int]) -> Draw:
    """:func:`draw` from Python's, NumPy's and torch's global RNGs as they stand, leaving them where the PIL path
    leaves them: a draw made after it inside the same seeded block is the PIL path's too.

    The calls are timm's and torchvision's, in their order: the crop box (``get_params``), the crop's filter when
    it is random, each flip's ``torch.rand(1)``, RandAugment's ``np.random.choice`` of ops, then per chosen op its
    probability check and, when it fires, its magnitude (``gauss``, or ``uniform`` for an infinite std), its level
    function (which may draw a sign) and the filter of a geometric op whose filter is random.
    """
    import numpy as np
    import torch
    from timm.data.auto_augment import _LEVEL_DENOM, RandAugment
    from timm.data.transforms import MaybePILToTensor, RandomResizedCropAndInterpolation
    from torchvision import transforms as T

    crop, interpolation, flips, ops = (0, 0, 0, 0), "", {"h": False, "v": False}, []
    for step in _steps(transform):
        if isinstance(step, RandomResizedCropAndInterpolation):
            top, left, height, width = step.get_params(_Header(size), step.scale, step.ratio)
            crop = (int(top), int(left), int(height), int(width))
            mode = step.interpolation
            interpolation = _filter_name(random.choice(mode) if isinstance(mode, (tuple, list)) else mode)
        elif isinstance(step, (T.RandomHorizontalFlip, T.RandomVerticalFlip)):
            flips["h" if isinstance(step, T.RandomHorizontalFlip) else "v"] = bool(torch.rand(1) < step.p)
        elif isinstance(step, RandAugment):
            chosen = np.random.choice(step.ops, step.num_layers, replace=step.choice_weights is None,
                                      p=step.choice_weights)  # fmt: skip
            ops += [op for op in (_fire(aug, _LEVEL_DENOM) for aug in chosen) if op is not None]
        elif not isinstance(step, MaybePILToTensor):
            raise _refuse("transform", f"the {type(step).__name__} step")
    return Draw(crop=crop, interpolation=interpolation, hflip=flips["h"], vflip=flips["v"], ops=tuple(ops))


def _fire(aug: Any, level_denom: float) -> Op | None:
    """timm's ``AugmentOp.__call__`` without the pixels: ``None`` when the op does not fire."""
    if aug.prob < 1.0 and random.random() > aug.prob:
        return None
    magnitude = aug.magnitude
    if aug.magnitude_std > 0:
        if aug.magnitude_std == float("inf"):
            magnitude = random.uniform(0, magnitude)
        else:
            magnitude = random.gauss(magnitude, aug.magnitude_std)
    magnitude = max(0.0, min(magnitude, aug.magnitude_max or level_denom))
    args = tuple(aug.level_fn(magnitude, aug.hparams)) if aug.level_fn is not None else ()
    if aug.name not in GEOMETRIC_OPS:
        return Op(name=aug.name, args=args)
    mode = aug.kwargs["resample"]  # timm's _check_args_tf, inside the op: after the level function
    resample = _filter_name(random.choice(mode) if isinstance(mode, (tuple, list)) else mode)
    return Op(name=aug.name, args=args, resample=resample, fill=tuple(aug.kwargs["fillcolor"]))


def apply_pil(img: Image.Image, d: Draw, size: int) -> Image.Image:
    """``d`` applied with timm's and torchvision's own PIL functions: what a :class:`Draw` means.

    On an image of the size it was drawn for, this is the PIL path's image before its tensor conversion, pixel for
    pixel; the device path is checked against it. Posterize to 0 bits gives a black image, as on the PIL path
    (:func:`transmix.data.compat.pillow_safe`). Draws nothing from any RNG.
    """
    from timm.data.auto_augment import NAME_TO_OP
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    from transmix.data.compat import _posterize

    top, left, height, width = d.crop
    img = F.resized_crop(img, top, left, height, width, [size, size], InterpolationMode(d.interpolation))
    if d.hflip:
        img = F.hflip(img)
    if d.vflip:
        img = F.vflip(img)
    for op in d.ops:
        fn = _posterize if "Posterize" in op.name else NAME_TO_OP[op.name]
        kwargs: dict[str, Any] = {"fillcolor": op.fill}
        if op.resample:
            kwargs["resample"] = Image.Resampling[op.resample.upper()]
        img = fn(img, *op.args, **kwargs)
    return img
