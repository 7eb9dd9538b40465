"""Mixup / CutMix sampling that keeps the box, and the TransMix label.

One convention everywhere: ``lam`` is the weight of the original (un-flipped) sample, as in timm. A batch is
mixed with its own reverse (``x.flip(0)``), so sample ``i`` is paired with sample ``B - 1 - i``.

TransMix (Chen et al., CVPR 2022) keeps CutMix's pixels but re-weights its label with the class token's
attention: ``lam = w * lam_area + (1 - w) * lam_attn``, where ``lam_attn`` is the share of the class token's
attention (over patch tokens) that falls outside the pasted box. The official release uses ``w = 0.5``
("the mean of both methods"); the paper's Fig. 1 describes ``w = 0``. Only CutMix batches are re-weighted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from timm.data.mixup import one_hot

from transmix.config.run import BOX_TO_GRID, CUTMIX_BOXES, METHODS

Mode = Literal["none", "mixup", "cutmix"]
Box = tuple[int, int, int, int]  # (y_low, y_high, x_low, x_high) of the pasted region, pixels, high exclusive


@dataclass(frozen=True)
class MixSpec:
    """What a method mixes. Built once from the config; see :func:`mix_spec`."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    switch_prob: float = 0.5
    mix_prob: float = 1.0
    box: str = "timm"  # how the CutMix box is rounded: see :func:`rand_box`

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def mix_spec(method: str, mixup_alpha: float, cutmix_alpha: float, switch_prob: float, mix_prob: float,
             box: str = "timm") -> MixSpec:  # fmt: skip
    """Map a method name to what it mixes: ``deit`` and ``transmix`` sample the same images and boxes."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if box not in CUTMIX_BOXES:
        raise ValueError(f"box={box!r} is not one of {CUTMIX_BOXES}")
    if method == "none":
        return MixSpec()
    if method == "mixup":
        return MixSpec(mixup_alpha=mixup_alpha, mix_prob=mix_prob)
    if method == "cutmix":
        return MixSpec(cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, box=box)
    return MixSpec(mixup_alpha, cutmix_alpha, switch_prob, mix_prob, box)


@dataclass(frozen=True)
class MixedBatch:
    """One mixed batch. ``labels_b`` is ``labels_a.flip(0)``; ``lam_area`` is the weight of ``labels_a``."""

    images: torch.Tensor
    labels_a: torch.Tensor
    labels_b: torch.Tensor
    lam_area: float
    box: Box | None
    mode: Mode


def _beta(alpha: float, gen: torch.Generator) -> float:
    # Beta(a, a) from the explicit generator (torch.distributions has no generator argument).
    seed = int(torch.randint(0, 2**62, (1,), generator=gen).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def rand_box(height: int, width: int, lam: float, gen: torch.Generator, rounding: str = "timm") -> Box:
    """timm's ``rand_bbox`` (square box of area ``1 - lam``, centre uniform, clipped), drawn from ``gen``.

    ``rounding``: ``timm`` ends the box at ``cy + (cut_h + 1) // 2`` as timm does today; ``release`` at
    ``cy + cut_h // 2`` as timm 0.5.4, which the official code ran: one pixel smaller along a side whose cut is odd
    (the label's ``lam_area`` follows the box actually pasted either way).
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (1,), generator=gen).item())
    cx = int(torch.randint(0, width, (1,), generator=gen).item())
    up = 1 if rounding == "timm" else 0
    yl, yh = max(cy - cut_h // 2, 0), min(cy + (cut_h + up) // 2, height)
    xl, xh = max(cx - cut_w // 2, 0), min(cx + (cut_w + up) // 2, width)
    return yl, yh, xl, xh


def mix_batch(images: torch.Tensor, labels: torch.Tensor, spec: MixSpec, gen: torch.Generator) -> MixedBatch:
    """Mix a batch with its reverse: Mixup or CutMix, one draw per batch, as timm's ``mode='batch'``.

    Args:
        images: ``(B, C, H, W)``; not modified.
        labels: ``(B,)`` integer class indices.
        spec: what to mix (see :func:`mix_spec`).
        gen: the only source of randomness (a CPU generator), so runs are reproducible and resumable.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    batch = images.shape[0]
    if spec.enabled and batch % 2:
        raise ValueError(
            f"batch of {batch} images cannot be mixed: Mixup/CutMix pair each image with the batch reversed and "
            "need an even batch size; set batch_size to an even number (the loader drops the last partial batch)"
        )
    labels_b = labels.flip(0)
    if not spec.enabled or float(torch.rand((), generator=gen)) >= spec.mix_prob:
        return MixedBatch(images, labels, labels_b, 1.0, None, "none")
    if spec.mixup_alpha > 0 and spec.cutmix_alpha > 0:
        use_cutmix = float(torch.rand((), generator=gen)) < spec.switch_prob
    else:
        use_cutmix = spec.cutmix_alpha > 0
    lam = _beta(spec.cutmix_alpha if use_cutmix else spec.mixup_alpha, gen)
    if not use_cutmix:
        mixed = images * lam + images.flip(0) * (1.0 - lam)
        return MixedBatch(mixed, labels, labels_b, lam, None, "mixup")
    height, width = images.shape[-2:]
    box = rand_box(height, width, lam, gen, spec.box)
    yl, yh, xl, xh = box
    mixed = images.clone()
    mixed[:, :, yl:yh, xl:xh] = images.flip(0)[:, :, yl:yh, xl:xh]
    lam_area = 1.0 - (yh - yl) * (xh - xl) / float(height * width)  # timm's correct_lam=True
    return MixedBatch(mixed, labels, labels_b, lam_area, box, "cutmix")


def token_cells(
    size: int, tokens: int, stride: int, centered: bool = False, device: torch.device | None = None
) -> torch.Tensor:
    """``(tokens, 2)`` pixel ranges ``[start, end)`` of the tokens along one side of the image.

    Token ``i`` of a network with total downsampling ``stride`` covers ``[i * stride, (i + 1) * stride)`` when
    it comes from non-overlapping patches (ViT, DeiT, CaiT, Swin), and ``[i * stride - stride // 2, ...)`` when
    padded convolutions centre it on pixel ``i * stride`` (XCiT, PVT-v2's overlapping patch embeds). Ranges are
    clipped to the image; the last token takes what is left when ``size`` is no multiple of ``stride``
    (28 pixels, stride 8: 0-8, 8-16, 16-24, 24-28 for patches; 0-4, 4-12, 12-20, 20-28 centred).

    Raises:
        ValueError: when ``tokens`` tokens of this stride cannot tile ``size`` pixels (a wrong model or size).
    """
    if tokens != -(-size // stride):
        raise ValueError(f"{tokens} tokens of stride {stride} do not tile {size} pixels ({-(-size // stride)} do)")
    starts = torch.arange(tokens, device=device) * stride - (stride // 2 if centered else 0)
    return torch.stack((starts.clamp(0, size), (starts + stride).clamp(0, size)), dim=1)


def box_mask(
    box: Box,
    image_size: tuple[int, int],
    grid: tuple[int, int],
    how: str = "release",
    stride: tuple[int, int] | None = None,
    centered: bool = False,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The pasted box on the token grid, flattened to ``(gh * gw,)`` in row-major token order, made on ``device``.

    ``release``: a token counts as pasted when pixel ``(i * stride, j * stride)`` is, as the official code's
    nearest-neighbour resize of the pixel mask does for an exact patch size (the patch's top-left pixel; for
    centred tokens, the centre). ``area``: the pasted fraction of each token's pixels (:func:`token_cells`).
    ``stride`` defaults to the exact patch size ``image_size / grid``; give it when the size is no multiple.
    Made where the attention is (``device``): a mask built on the host and copied from pageable memory would make
    the host wait for the forward pass before it could queue the backward one.
    """
    if how not in BOX_TO_GRID:
        raise ValueError(f"box_to_grid={how!r} is not one of {BOX_TO_GRID}")
    axes = []
    for lo, hi, size, tokens, step in zip(box[0::2], box[1::2], image_size, grid, stride or (None, None), strict=True):
        if step is None:
            if size % tokens:
                raise ValueError(f"{tokens} tokens on {size} pixels: pass the network's stride (no exact patch size)")
            step = size // tokens
        cells = token_cells(size, tokens, step, centered, device).float()
        if how == "release":
            anchor = torch.arange(tokens, device=device) * step
            axes.append(((anchor >= lo) & (anchor < hi)).float())
        else:
            overlap = (cells[:, 1].clamp(max=hi) - cells[:, 0].clamp(min=lo)).clamp_min(0)
            axes.append(overlap / (cells[:, 1] - cells[:, 0]))
    return torch.outer(axes[0], axes[1]).flatten()


def attention_lam(attn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample share of the class token's attention that falls on un-pasted patches.

    Args:
        attn: ``(B, N)`` class-token attention over the ``N`` patch tokens (prefix tokens dropped).
        mask: ``(N,)`` pasted fraction of each patch.
    """
    attn = attn.float()
    mask = mask.to(attn.device, attn.dtype)
    inside = (attn * mask).sum(1)
    outside = (attn * (1.0 - mask)).sum(1)
    return outside / (inside + outside).clamp_min(torch.finfo(attn.dtype).tiny)


def transmix_lam(lam_area: float, lam_attn: torch.Tensor, area_weight: float) -> torch.Tensor:
    """``w * lam_area + (1 - w) * lam_attn``; ``w = 0.5`` is the released rule, ``w = 0`` the paper's Fig. 1."""
    return area_weight * lam_area + (1.0 - area_weight) * lam_attn


def soft_targets(
    labels_a: torch.Tensor, labels_b: torch.Tensor, num_classes: int, lam: float | torch.Tensor, smoothing: float
) -> torch.Tensor:
    """Label-smoothed targets ``lam * y(labels_a) + (1 - lam) * y(labels_b)``; ``lam`` scalar or per sample.

    The partner labels are passed explicitly (rather than flipping ``labels_a``, as timm's ``mixup_target`` does)
    so that a slice of a mixed batch, as one process of a distributed run trains on, keeps its true partners.
    The smoothing values are timm's (``off = smoothing / num_classes``, ``on = 1 - smoothing + off``).
    """
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y_a = one_hot(labels_a, num_classes, on_value=on, off_value=off)
    y_b = one_hot(labels_b, num_classes, on_value=on, off_value=off)
    if isinstance(lam, torch.Tensor):
        lam = lam.to(y_a.device, y_a.dtype).view(-1, 1)
    return y_a * lam + y_b * (1.0 - lam)
