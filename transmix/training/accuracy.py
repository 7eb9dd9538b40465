"""Top-k accuracy and calibration of a model on a split: the one accuracy every number of this package is measured
with (per-epoch validation in training, the clean rows, each robustness point), so an unperturbed robustness point
equals the clean accuracy. Torch only: the trainer imports it without the reporting layer."""

from __future__ import annotations

import torch
from torch import nn

from transmix.data import Split
from transmix.training.runtime import autocast


@torch.no_grad()
def top_k(
    model: nn.Module,
    data: Split,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 500,
    ks: tuple[int, ...] = (1, 5),
) -> dict[int, float]:
    """Top-k accuracy in percent, in eval mode whatever mode the model is in (and left in its mode)."""
    return scores(model, data, device, precision, batch_size, ks, bins=0)[0]


@torch.no_grad()
def calibration(model: nn.Module, data: Split, device: torch.device, precision: str = "fp32",
                batch_size: int = 500, bins: int = 15) -> dict[str, float]:  # fmt: skip
    """How far the model's confidence is from its accuracy, and how smooth its outputs are (:func:`scores`)."""
    return scores(model, data, device, precision, batch_size, ks=(1,), bins=bins)[1]


@torch.no_grad()
def scores(model: nn.Module, data: Split, device: torch.device, precision: str = "fp32", batch_size: int = 500,
           ks: tuple[int, ...] = (1, 5), bins: int = 15) -> tuple[dict[int, float], dict[str, float]]:  # fmt: skip
    """Top-k accuracy (percent) and, with ``bins``, the calibration, from one pass over ``data`` in eval mode.

    The calibration: the expected calibration error (percent; ``bins`` equal-width bins of the top softmax
    probability, each weighted by its share of images) and the mean entropy of the softmax (nats; ``log(classes)``
    for a uniform output). MIX-KD (Choi et al., WACV 2023) ties a teacher's usefulness to this smoothness, so every
    run reports both (``suite = calibration``). One pass serves both because a pass over the test split is the cost
    of an evaluation."""
    was_training = model.training
    model.eval()
    correct = dict.fromkeys(ks, 0)
    confidence, hit, entropy = [], [], []
    for x, y in data.eval_batches(batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x).float()
        ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # top-5 of 3 classes: all
        hits = ranked == y[:, None]
        for k in ks:
            correct[k] += int(hits[:, :k].any(dim=1).sum())
        if bins:
            probs = logits.softmax(dim=1)
            top, pred = probs.max(dim=1)
            confidence.append(top.cpu())
            hit.append((pred == y).float().cpu())
            entropy.append(torch.special.entr(probs).sum(dim=1).cpu())
    model.train(was_training)
    accuracy = {k: 100.0 * c / len(data) for k, c in correct.items()}
    if not bins:
        return accuracy, {}
    conf, right = torch.cat(confidence), torch.cat(hit)
    which = torch.clamp((conf * bins).long(), max=bins - 1)
    ece = sum((which == b).float().mean() * (conf[which == b].mean() - right[which == b].mean()).abs()
              for b in range(bins) if (which == b).any())  # fmt: skip
    return accuracy, {"ece": 100.0 * float(ece), "entropy": float(torch.cat(entropy).mean())}
