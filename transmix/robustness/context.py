"""What every suite is given, and the one way a perturbed set of images is scored.

A suite is a function of one :class:`Context`. Scoring goes through :func:`transmix.training.accuracy.top_k`, the
code of the clean evaluation, so an unperturbed protocol point (occlusion 0, shuffle grid 1, epsilon 0) gives
the clean number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from transmix.config.robustness import Protocol
from transmix.robustness.images import EvalImages
from transmix.training.accuracy import top_k
from transmix.training.runtime import autocast

Rows = list[dict[str, Any]]
log = logging.getLogger(__name__)


def row(suite: str, setting: str, level: float, variant: str, metric: str, value: float, n: int) -> dict[str, Any]:
    """One measured number of a suite: which protocol point (``setting``, ``level``), which weights, what."""
    return {"suite": suite, "setting": setting, "level": level, "variant": variant, "metric": metric,
            "value": value, "n": n}  # fmt: skip


def logged(rows: Rows) -> Rows:
    """Log what one protocol point measured, as soon as it is measured, and return it: a suite of many points (every
    corruption at every severity, every epsilon of every attack) shows its progress, and a stopped one what it got."""
    first = rows[0]
    values = ", ".join(f"{r['variant']} {r['value']:.2f}" for r in rows)
    log.info("robustness %s %s %g: %s %s (%d images)", first["suite"], first["setting"], first["level"],
             first["metric"], values, first["n"])  # fmt: skip
    return rows


@dataclass(frozen=True)
class Context:
    """The run's models by variant (``raw``, ``ema``), its test images, the protocol, where to compute, and the
    suite's own generator (every random draw of the suite comes from it)."""

    models: dict[str, nn.Module]
    data: EvalImages
    protocol: Protocol
    device: torch.device
    gen: torch.Generator
    precision: str = "fp32"

    @torch.no_grad()
    def logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The model's logits (float32, on the CPU), in eval mode whatever mode the model is in."""
        was_training = model.training
        model.eval()
        with autocast(self.device, self.precision):
            logits = model(images.to(self.device))
        model.train(was_training)
        return logits.float().cpu()

    def top1(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 (percent) with the clean evaluation's code."""
        batches = EvalImages(images, labels, self.data.num_classes)
        return top_k(model, batches, self.device, self.precision, batch_size=self.protocol.batch_size, ks=(1,))[1]

    def top1_rows(self, images: torch.Tensor, labels: torch.Tensor, suite: str, setting: str, level: float) -> Rows:
        """One protocol point scored on every variant."""
        return logged([row(suite, setting, level, variant, "top1", self.top1(model, images, labels), len(labels))
                       for variant, model in self.models.items()])  # fmt: skip
