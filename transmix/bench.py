"""Step-time benchmark: methods measured side by side in one process, reported as ratios.

Each column trains its own copy of the same model (same initial weights) on the same batches. The transmix
columns draw the same mixing as deit, so the only difference is the label computation. The ``timm`` column is the
same step composed of timm's own training parts as timm's ``train.py`` composes them (``timm.data.Mixup`` in batch
mode, ``timm.task.ClassificationTask`` with its soft-target loss, the same optimizer): the reference for our
loop's overhead. Rounds interleave the columns, in alternating order, so drift of the machine (turbo, other load)
hits all of them alike; the ratio of medians is reported.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.task import ClassificationTask

from transmix.attention import ExplicitClassAttention
from transmix.config import TrainConfig
from transmix.models import create_model
from transmix.runtime import resolve_device
from transmix.step import Stepper

# (column, method, attention capture); "timm" is timm's own Mixup + ClassificationTask step
COLUMNS = (
    ("deit", "deit", "hook"),
    ("transmix", "transmix", "hook"),
    ("transmix-explicit", "transmix", "explicit"),
    ("timm", "deit", "timm"),
)


class TimmStep:
    """One training step as timm's train.py makes it: Mixup on the batch, the task's forward and loss, a step."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 num_classes: int, device: torch.device):  # fmt: skip
        self.mixup = Mixup(
            mixup_alpha=cfg.mixup_alpha,
            cutmix_alpha=cfg.cutmix_alpha,
            prob=cfg.mix_prob,
            switch_prob=cfg.switch_prob,
            mode="batch",
            label_smoothing=cfg.label_smoothing,
            num_classes=num_classes,
        )
        self.task = ClassificationTask(model, criterion=SoftTargetCrossEntropy(), device=device, verbose=False)
        self.optimizer, self.device = optimizer, device

    def __call__(self, x: torch.Tensor, y: torch.Tensor, _gen: torch.Generator) -> None:
        x, target = self.mixup(x.to(self.device), y.to(self.device))  # draws from NumPy's global RNG
        loss = self.task(x, target)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


@dataclass(frozen=True)
class BenchResult:
    column: str
    median_ms: float
    images_per_second: float
    ratio_to_deit: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    cfg: TrainConfig,
    steps: int = 10,
    rounds: int = 7,
    warmup: int = 3,
    in_chans: int = 1,
    img_size: int = 28,
    num_classes: int = 10,
) -> list[BenchResult]:
    """Median training-step time per column over ``rounds`` rounds of ``steps`` steps each."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    base = create_model(
        cfg.model, num_classes=num_classes, in_chans=in_chans, img_size=img_size, drop_path=cfg.drop_path
    ).to(device)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    batches = [
        (
            torch.randn(cfg.batch_size, in_chans, img_size, img_size, generator=data_gen),
            torch.randint(0, num_classes, (cfg.batch_size,), generator=data_gen),
        )
        for _ in range(steps)
    ]
    steppers = {}
    for column, method, capture in COLUMNS:
        model = copy.deepcopy(base)
        run_cfg = cfg.replace(method=method)
        opt = create_optimizer_v2(model, opt=run_cfg.opt, lr=run_cfg.lr, weight_decay=run_cfg.weight_decay)
        if capture == "timm":
            steppers[column] = TimmStep(run_cfg, model, opt, num_classes, device)
            continue
        stepper = Stepper(run_cfg, model, opt, num_classes, device, (img_size, img_size))
        if capture == "explicit":
            stepper.capture.remove()
            stepper.capture = ExplicitClassAttention(model)
        steppers[column] = stepper
    times: dict[str, list[float]] = {c: [] for c, _, _ in COLUMNS}
    for r in range(warmup + rounds):
        order = list(steppers.items())
        if r % 2:
            order.reverse()
        for column, stepper in order:
            gen = torch.Generator().manual_seed(cfg.seed + r)  # identical mixing draws for every column
            _sync(device)
            t0 = time.perf_counter()
            for x, y in batches:
                stepper(x, y, gen)
            _sync(device)
            if r >= warmup:
                times[column].append((time.perf_counter() - t0) / steps)
    base_ms = statistics.median(times["deit"]) * 1e3
    out = []
    for column, _, _ in COLUMNS:
        ms = statistics.median(times[column]) * 1e3
        out.append(BenchResult(column, ms, cfg.batch_size / ms * 1e3, ms / base_ms))
    return out


def format_table(results: list[BenchResult], cfg: TrainConfig, threads: int) -> str:
    device = resolve_device(cfg.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {threads} thread(s)"
    lines = [
        f"model {cfg.model}, batch {cfg.batch_size}, {cfg.precision}, {name}, torch {torch.__version__}",
        f"{'column':<20}{'ms/step':>10}{'img/s':>10}{'vs deit':>10}{'timm/this':>11}",
    ]
    timm_ms = next(r.median_ms for r in results if r.column == "timm")
    for r in results:
        lines.append(
            f"{r.column:<20}{r.median_ms:>10.2f}{r.images_per_second:>10.0f}{r.ratio_to_deit:>10.3f}"
            f"{timm_ms / r.median_ms:>11.3f}"
        )
    lines.append("timm/this > 1: this column's step is faster than timm's own (throughput ratio this : timm)")
    return "\n".join(lines)
