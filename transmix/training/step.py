"""One training step of any method: mix, forward, label, loss, update. Shared by the trainer and the benchmark.

The method lives in :mod:`transmix.method.mixing` (sampling and the label) and :mod:`transmix.method.attention` (the
class token's attention); this step only decides per batch whether the label is re-weighted: TransMix re-weights
CutMix batches, and Mixup batches keep the area label, as released.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from transmix.config.run import TrainConfig
from transmix.method.attention import ClassAttention
from transmix.method.mixing import mix_batch, mix_spec, soft_targets, transmix_lam
from transmix.training.runtime import autocast


@dataclass
class StepOutput:
    loss: torch.Tensor
    mode: str
    lam_area: float
    lam: torch.Tensor | None  # per-sample label weight used, for re-weighted (TransMix CutMix) batches
    lam_attn: torch.Tensor | None = None  # per-sample attention weight behind ``lam``, same batches


class Stepper:
    """One training step of ``cfg.method``.

    Args:
        model: what the forward pass calls (possibly wrapped in DDP).
        capture_model: the unwrapped model, where the attention hooks go (default: ``model``).
        part: ``(rank, world)``: this process trains on slice ``rank`` of ``world`` of each mixed batch; ``(0, 1)``
            (all of it) when each process is given its own local batch.
        teacher: a frozen model that teaches by ``cfg.distillation`` (:mod:`transmix.training.distill`); it sees the
            same mixed images.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        num_classes: int,
        device: torch.device,
        image_size: tuple[int, int],
        capture_model: nn.Module | None = None,
        part: tuple[int, int] = (0, 1),
        teacher: nn.Module | None = None,
    ):
        self.cfg, self.model, self.optimizer, self.device = cfg, model, optimizer, device
        self.num_classes = num_classes
        self.spec = mix_spec(cfg.method, cfg.mixup_alpha, cfg.cutmix_alpha, cfg.switch_prob, cfg.mix_prob,
                             cfg.cutmix_box)  # fmt: skip
        self.capture = None
        if cfg.method == "transmix":
            self.capture = ClassAttention(capture_model or model, cfg.attn_block, cfg.attn_blocks, cfg.attn_heads)
        self.image_size = image_size
        self.part = part
        self.loss_fn = SoftTargetCrossEntropy()
        self.task = None
        if teacher is not None:
            from transmix.training.distill import distillation_task

            self.task = distillation_task(cfg, model, teacher, device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> StepOutput:
        """Mix ``(x, y)`` on the device (a no-op move where the split already delivered it there), train on this
        process's part."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        mixed = mix_batch(x, y, self.spec, gen)
        images, labels_a, labels_b = (self._mine(t) for t in (mixed.images, mixed.labels_a, mixed.labels_b))
        reweight = self.capture is not None and mixed.mode == "cutmix"
        if self.capture is not None:
            self.capture.enabled, self.capture.attn = reweight, None  # a hook that did not run is an error, not stale
        lam: float | torch.Tensor = mixed.lam_area
        lam_attn = None

        def targets() -> torch.Tensor:  # after the forward pass: TransMix reads the attention it captured
            nonlocal lam, lam_attn
            if reweight:
                assert mixed.box is not None  # CutMix batches carry their box
                lam_attn = self.capture.lam(mixed.box, self.image_size, self.cfg.box_to_grid)
                lam = transmix_lam(mixed.lam_area, lam_attn, self.cfg.area_weight)
            return soft_targets(labels_a, labels_b, self.num_classes, lam, self.cfg.label_smoothing)

        if self.task is None:
            with autocast(self.device, self.cfg.precision):
                logits = self.model(images)
            loss = self.loss_fn(logits.float(), targets())
        else:  # the label loss, then the teacher on the same images (timm's task)
            with autocast(self.device, self.cfg.precision):
                loss = self.task(images, targets)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return StepOutput(loss.detach(), mixed.mode, mixed.lam_area, lam if reweight else None, lam_attn)

    def _mine(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a mixed batch (all of it for ``part=(0, 1)``)."""
        rank, world = self.part
        local = len(batch) // world
        return batch[rank * local : (rank + 1) * local]
