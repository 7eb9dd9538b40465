"""CutMix pairs through a trained TransMix run: the class token's attention and both label weights (Fig. 1).

The paper's Fig. 1 pastes a box of one image into another and shows that the pasted area's share and the
share of the class token's attention can disagree. :func:`cutmix_pairs` does this with real test images and a
trained run's weights, with the same sampling (:func:`transmix.method.mixing.mix_batch`) and the same attention read
and box-to-grid rule as its training, so every number in notebook 04 is what that run's training would have used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transmix.config.run import TrainConfig
from transmix.config.study import PAIRS
from transmix.data import Split, class_names, eval_split
from transmix.evaluation.finished import load_final, variants
from transmix.method.attention import ClassAttention
from transmix.method.mixing import MixSpec, mix_batch
from transmix.training.runtime import resolve_device

__all__ = ["PAIRS", "PASTING", "Pair", "cutmix_pairs", "run_pairs"]

PASTING = ("cutmix", "deit", "transmix")  # the methods that paste boxes, and so have an area label to compare


@dataclass(frozen=True)
class Pair:
    """One CutMix pair: ``mixed`` is ``image_a`` with ``box`` pasted from ``image_b``.

    ``lam_area`` and ``lam_attn`` are the weights of ``label_a`` by pasted area and by the class token's attention;
    ``attention`` is that attention over the token grid, ``(gh, gw)``, normalised over patches, and ``pasted`` the
    box on that grid as the label reads it (the run's ``box_to_grid``: 1 for a pasted token, a fraction with
    ``area``). ``class_a`` and ``class_b`` name the labels (Fashion-MNIST's classes, or the class folders).
    """

    image_a: torch.Tensor  # images as matplotlib shows them: (H, W) grey or (H, W, 3) in [0, 1]
    image_b: torch.Tensor
    mixed: torch.Tensor
    label_a: int
    label_b: int
    class_a: str
    class_b: str
    box: tuple[int, int, int, int]
    attention: torch.Tensor
    pasted: torch.Tensor
    lam_area: float
    lam_attn: float


def run_pairs(run_dir: str | Path, count: int, seed: int = 0, variant: str = "ema", device: str = "cpu") -> list[Pair]:
    """:func:`cutmix_pairs` of a finished run's ``variant`` weights (``raw`` or ``ema``) on its test split.

    Raises:
        ValueError: for an unknown variant.
    """
    dev = resolve_device(device)
    cfg, state = load_final(run_dir, dev)
    test = eval_split(cfg, images=0)
    models = variants(cfg, state, test, dev)
    if variant not in models:
        raise ValueError(f"variant={variant!r}: the run has {sorted(models)}")
    return cutmix_pairs(cfg, models[variant], test, count, seed)


@torch.no_grad()
def cutmix_pairs(cfg: TrainConfig, model: torch.nn.Module, test: Split, count: int, seed: int = 0) -> list[Pair]:
    """``count`` CutMix pairs of ``test`` images (at most half of them: each image once; Beta(``cutmix_alpha``)
    boxes, as the run trained) and what ``model``, a run of ``cfg``, makes of them. The attention is read with the
    run's ``attn_*`` settings (a ``deit`` run: the released defaults, so its attention can be compared too)."""
    dev = next(model.parameters()).device
    names = class_names(cfg)
    capture = ClassAttention(model, cfg.attn_block, cfg.attn_blocks, cfg.attn_heads)
    capture.enabled = True
    spec = MixSpec(cutmix_alpha=cfg.cutmix_alpha, box=cfg.cutmix_box)
    gen = torch.Generator().manual_seed(seed)
    count = min(count, len(test) // 2)  # a small test split gives as many pairs as it holds, each image once
    picks = torch.randperm(len(test), generator=gen)[: 2 * count].view(count, 2)
    out = []
    for a, b in picks.tolist():
        (image_a, label_a), (image_b, label_b) = test[a], test[b]
        x, y = torch.stack((image_a, image_b)), torch.tensor([int(label_a), int(label_b)])
        mixed = mix_batch(x, y, spec, gen)  # sample 0 = image a with the box from b (its flip partner)
        model(mixed.images.to(dev))
        attn = capture.attn[0]
        out.append(
            Pair(
                image_a=_for_display(x[0]),
                image_b=_for_display(x[1]),
                mixed=_for_display(mixed.images[0]),
                label_a=int(y[0]),
                label_b=int(y[1]),
                class_a=names[int(y[0])],
                class_b=names[int(y[1])],
                box=mixed.box,
                attention=(attn / attn.sum()).view(capture.grid).cpu(),
                pasted=capture.pasted(mixed.box, tuple(x.shape[-2:]), cfg.box_to_grid).view(capture.grid).cpu(),
                lam_area=mixed.lam_area,
                lam_attn=float(capture.lam(mixed.box, tuple(x.shape[-2:]), cfg.box_to_grid)[0]),
            )
        )
    capture.remove()
    return out


def _for_display(image: torch.Tensor) -> torch.Tensor:
    """A normalised ``(C, H, W)`` image as ``(H, W)`` (one channel) or ``(H, W, 3)`` scaled to [0, 1]."""
    image = image.float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
    return image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
