"""The sums behind an epoch's history row, added on the device so that a training step never waits for it.

Reading the loss back every step (for the NaN check, the SIGTERM agreement, the progress line) would make the host
wait for the device at every step; :class:`EpochMeter` keeps the sums in a float64 tensor on the device and reads
them only when asked (every ``sync_every`` steps and at the epoch's end).
"""

from __future__ import annotations

import torch

from transmix.training.checkpoint import Progress
from transmix.training.runtime import reduce
from transmix.training.step import StepOutput

SUMMED = ("loss", "lam_area", "lam", "lam_attn", "lam_gap")  # the epoch's sums that are added on the device


def epoch_sums() -> dict[str, float]:
    """What an epoch adds up for its history row (kept in mid-epoch checkpoints)."""
    return {"loss": 0.0, "cutmix": 0, "lam_area": 0.0, "lam": 0.0, "lam_attn": 0.0, "lam_gap": 0.0, "seconds": 0.0}


class EpochMeter:
    """The epoch's sums of :data:`SUMMED` (loss, and the label weights of CutMix batches), added on the device in
    float64, so a step never waits for the device; :meth:`sync` reads them into ``progress.sums``.

    The additions are those the host would make with the values read every step, in the same order and in the same
    precision, so the sums are the same to the last bit whatever ``sync_every`` is.
    """

    def __init__(self, progress: Progress, device: torch.device):
        self.progress = progress
        self.acc = torch.tensor([progress.sums[k] for k in SUMMED], dtype=torch.float64, device=device)
        self.steps = 0  # since the last sync
        self.loss_before = progress.sums["loss"]

    def add(self, result: StepOutput) -> None:
        """One step: its loss and, for a CutMix batch, its area, label and attention weights and their gap."""
        parts: list[torch.Tensor | float] = [result.loss, 0.0, 0.0, 0.0, 0.0]
        if result.mode == "cutmix":
            self.progress.sums["cutmix"] += 1  # the mode is drawn on the host: no wait
            parts[1:3] = [result.lam_area, result.lam.mean() if result.lam is not None else result.lam_area]
            if result.lam_attn is not None:
                parts[3:] = [result.lam_attn.mean(), (result.lam_attn - result.lam_area).abs().mean()]
        self.acc += torch.stack([_on(p, self.acc.device) for p in parts])
        self.steps += 1

    def sync(self, stop: bool, world: int) -> tuple[int, float, bool]:
        """Wait for the device: the sums into ``progress.sums`` (the loss as the mean over processes), and
        ``(steps since the last sync, their mean loss, whether any process was asked to stop)``."""
        loss, stop = reduce(self.acc[0], stop, world)
        self.progress.sums.update(zip(SUMMED, [loss, *self.acc[1:].tolist()], strict=True))
        steps, mean = self.steps, (loss - self.loss_before) / max(self.steps, 1)
        self.steps, self.loss_before = 0, loss
        return steps, mean, stop


def _on(value: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """``value`` as a float64 scalar on ``device``. A Python number is filled in there by a kernel: a tensor made from
    it on the host and copied (``torch.as_tensor(value, device=...)``) would make the host wait for the device at every
    step, and would round it to float32 first."""
    if isinstance(value, torch.Tensor):
        return value.to(device, torch.float64)
    return torch.full((), float(value), dtype=torch.float64, device=device)
