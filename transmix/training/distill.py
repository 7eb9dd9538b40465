"""Knowledge distillation: a finished run teaches a new one, through timm's distillation tasks.

DeiT is itself a distillation recipe, and the way a teacher was mixed (none, Mixup/CutMix, TransMix) changes how
smooth its outputs are; MIX-KD (Choi et al., WACV 2023) found that smoothness decides how well it teaches and at
which temperature. So a run may name a teacher run (``teacher``, ``distillation``, ``distill_alpha``,
``distill_tau``), and the student's step adds the teacher's term to its label loss.

The losses are timm's: :class:`timm.task.TokenDistillationTask` for a student with a distillation token (DeiT's
soft or hard distillation of that token, the class token learning the labels), :class:`timm.task.
LogitDistillationTask` for any other student (soft only: DeiT's hard kind needs the second token). Both weigh the
label loss by ``1 - distill_alpha`` and the teacher's by ``distill_alpha``, as DeiT's ``DistillationLoss``, and
both run the teacher on the student's input, so it sees the same mixed images. timm's soft term is the KL
divergence per image (``batchmean``) times tau², DeiT's the same summed over classes and divided by their number:
the same direction, 1/classes of the weight.

What is written here is only what TransMix needs: the label of a TransMix CutMix batch is known only after the
student's forward pass (its attention sets the weight), so the tasks get a label loss that asks for its targets
when they call it, between the student's forward pass and the teacher's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from timm.loss import SoftTargetCrossEntropy
from timm.task import LogitDistillationTask, TokenDistillationTask
from timm.task.task import TrainingTask
from timm.utils import unwrap_model
from torch import nn

from transmix.config.run import TrainConfig
from transmix.data import Split
from transmix.errors import Failure
from transmix.method.models import build_model
from transmix.training.checkpoint import CheckpointError, read_final


class TeacherError(Failure, ValueError):
    """The teacher run cannot teach this run: unfinished, another dataset, image size or number of classes."""


class LabelLoss(nn.Module):
    """Soft-target cross-entropy against targets made on demand: ``targets()`` runs after the forward pass that
    produced ``logits``, so TransMix reads the attention of that very pass."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = SoftTargetCrossEntropy()

    def forward(self, logits: torch.Tensor, targets: Callable[[], torch.Tensor]) -> torch.Tensor:
        return self.loss(logits.float(), targets())


# The keys that must agree for a teacher's outputs to mean anything on the student's images.
MUST_MATCH = ("dataset", "img_size", "mean", "std")


def load_teacher(cfg: TrainConfig, data: Split, device: torch.device) -> nn.Module:
    """The teacher run ``cfg.teacher``: its EMA weights when it kept them (those its evaluation shows), else its raw
    weights; frozen, in eval mode, on ``device``. Loaded with ``weights_only=True``.

    Raises:
        TeacherError: the run has not finished, or was trained on other images or classes than ``data``'s.
    """
    where = Path(cfg.teacher)
    try:
        state = read_final(where, device)
    except (FileNotFoundError, CheckpointError) as err:
        raise TeacherError(f"teacher={cfg.teacher}: {err}") from None
    taught = TrainConfig.from_dict({**TrainConfig().to_dict(), **state["config"]})
    differ = {key: (getattr(taught, key), getattr(cfg, key)) for key in MUST_MATCH
              if getattr(taught, key) != getattr(cfg, key)}  # fmt: skip
    if differ:
        raise TeacherError(f"teacher={cfg.teacher} was trained on other images than this run (teacher vs student: "
                           f"{differ}); a teacher must see the student's images as it saw its own")  # fmt: skip
    model = build_model(taught, data).to(device)
    try:
        model.load_state_dict(state["ema"] if state["ema"] is not None else state["model"])
    except RuntimeError as err:
        raise TeacherError(f"teacher={cfg.teacher} ({taught.model}) does not fit this run's data of "
                           f"{data.num_classes} classes and {tuple(data.image_shape)} images: "
                           f"{str(err).splitlines()[-1].strip()}") from None  # fmt: skip
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def distillation_task(cfg: TrainConfig, student: nn.Module, teacher: nn.Module, device: torch.device) -> TrainingTask:
    """timm's task for ``cfg.distillation`` around ``student`` (what the step calls: possibly DDP or compiled);
    ``task(images, targets)`` returns its ``loss``. A student with a distillation token learns the teacher through
    it (both kinds); any other student distils its one output (soft only)."""
    tokens = hasattr(unwrap_model(student), "set_distilled_training")
    if cfg.distillation == "hard" and not tokens:
        raise TeacherError(f"distillation=hard needs a student with a distillation token (a deit_*_distilled_* "
                           f"model); {cfg.model} has one output: use distillation=soft")  # fmt: skip
    common = dict(criterion=LabelLoss(), task_loss_weight=1.0 - cfg.distill_alpha, temperature=cfg.distill_tau,
                  device=device, verbose=False)  # fmt: skip
    if tokens:
        task = TokenDistillationTask(student, teacher, distill_type=cfg.distillation, **common)
    else:
        task = LogitDistillationTask(student, teacher, **common)
    # Teacher and student were trained on the same normalised images (checked by load_teacher): timm would
    # otherwise re-normalise the input by their ImageNet defaults, which differ between model families.
    task.student_mean = task.student_std = None
    return task
