"""Step-time benchmark: the methods measured side by side in one process, reported as paired ratios with intervals.

Columns train their own copies of the same model (same initial weights) on the same batches:

* ``deit``: this package's step with area labels (the paper's baseline);
* ``transmix``: the same mixing draws, the label re-weighted by the hooked class-token attention;
* ``transmix-explicit``: the same with the release's explicit attention matrix (fused attention off);
* ``timm``: the ``deit`` step composed of timm's own training parts as timm's ``train.py`` composes them
  (``timm.data.Mixup`` in batch mode, ``timm.task.ClassificationTask`` with its soft-target loss, the same
  optimizer): the reference for this package's overhead;
* ``deit+kd`` (with a ``teacher_model``): the ``deit`` step distilling a frozen teacher of that architecture
  (soft, :mod:`transmix.training.distill`; random weights, which cost the same): its ratio to ``deit`` is what a teacher
  adds to a training step (its TFLOP/s counts the student's work only).

Each configuration (eager or ``torch.compile``, fp32 or bf16) runs warm-up rounds (compilation happens there), then
measured rounds in which every column runs the same ``steps`` steps (the same batches and mixing draws every round),
in alternating order, so drift of the machine hits all columns alike. A ratio is taken within each round (paired)
and reported as the mean of the per-round ratios with a 95% t-interval over rounds, not as a ratio of medians. Peak
memory is ``torch.cuda.max_memory_allocated`` per column on a GPU; on a CPU the process's peak resident memory so
far (one number for the process, not per column).
"""

from __future__ import annotations

import copy
import csv
import math
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.task import ClassificationTask

from transmix.config.run import TrainConfig
from transmix.method.attention import ExplicitClassAttention
from transmix.method.models import create_model
from transmix.training.runtime import compile_model, device_name, resolve_device, use_tf32
from transmix.training.step import Stepper

COLUMNS = ("deit", "transmix", "transmix-explicit", "timm")
KD = "deit+kd"  # the deit step with a teacher, when one is asked for
MODES = ("eager", "compiled")
# Dense bf16 peak TFLOP/s by device name (NVIDIA's data sheets, SXM parts): the denominator of the peak fraction.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
Batch = tuple[torch.Tensor, torch.Tensor]  # images and labels, on the device


class TimmStep:
    """One training step as timm's train.py makes it: Mixup on the batch, the task's forward and loss, a step."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, num_classes: int,
                 device: torch.device):  # fmt: skip
        self.mixup = Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=cfg.mix_prob,
                           switch_prob=cfg.switch_prob, mode="batch", label_smoothing=cfg.label_smoothing,
                           num_classes=num_classes)  # fmt: skip
        self.task = ClassificationTask(model, criterion=SoftTargetCrossEntropy(), device=device, verbose=False)
        self.optimizer, self.device, self.precision = optimizer, device, cfg.precision

    def __call__(self, x: torch.Tensor, y: torch.Tensor, _gen: torch.Generator) -> None:
        x, target = self.mixup(x.to(self.device), y.to(self.device))  # draws from NumPy's global RNG
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            loss = self.task(x, target)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


@dataclass(frozen=True)
class BenchRow:
    """One column of one configuration, as a row of the CSV."""

    model: str
    batch_size: int
    img_size: int
    mode: str
    precision: str
    column: str
    ms_per_step: float  # median over rounds
    images_per_second: float
    vs_deit: float  # step time / deit's, mean of per-round ratios
    vs_deit_low: float
    vs_deit_high: float
    speedup_vs_timm: float  # timm's step time / this column's: > 1 is faster than timm's own parts
    speedup_vs_timm_low: float
    speedup_vs_timm_high: float
    peak_memory_mb: float
    achieved_tflops: float  # 3 x forward FLOPs per image x images/s
    peak_fraction: float  # of --peak-tflops (NaN without it)
    rounds: int
    device: str
    torch: str
    timm: str
    threads: int


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on a CPU): the end of a timed stretch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def device_peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 peak of a CUDA device listed in :data:`PEAK_BF16_TFLOPS` (None elsewhere): a fraction of it
    says how busy a step keeps the device, which images/s alone cannot."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def setup(cfg: TrainConfig, steps: int, in_chans: int, img_size: int,
          num_classes: int) -> tuple[torch.device, torch.nn.Module, list[Batch]]:  # fmt: skip
    """The device, the seeded model every column copies, and ``steps`` batches already on the device, as the loader
    delivers them: what the bench, the profile and the peak table all time, built once here so they time the same."""
    device = resolve_device(cfg.device)
    use_tf32(device, cfg.tf32)
    torch.manual_seed(cfg.seed)
    base = create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                        drop_path=cfg.drop_path).to(device)  # fmt: skip
    data_gen = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.batch_size, in_chans, img_size, img_size)
    batches = []
    for _ in range(steps):
        x, y = torch.randn(shape, generator=data_gen), torch.randint(0, num_classes, shape[:1], generator=data_gen)
        batches.append((x.to(device), y.to(device)))
    return device, base, batches


def compile_with(model: torch.nn.Module, mode: str | None = None) -> torch.nn.Module:
    """:func:`~transmix.training.runtime.compile_model` (training's compile, hooks guarded), or with a
    ``torch.compile`` ``mode`` such as ``max-autotune``, guarded the same way, for the peak table's variants."""
    if mode in (None, "default"):
        return compile_model(model)
    import torch._dynamo.config

    torch._dynamo.config.skip_nnmodule_hook_guards = False
    return torch.compile(model, mode=mode)


def steppers(cfg: TrainConfig, base: torch.nn.Module, num_classes: int, size: int, device: torch.device,
             compiled: bool, teacher: torch.nn.Module | None = None, columns: tuple[str, ...] = COLUMNS,
             compile_mode: str | None = None) -> dict:  # fmt: skip
    """A fresh copy of the model per column of ``columns``, with its optimizer and step (and the ``deit+kd`` column
    with a ``teacher``); compiled with ``compile_mode`` (None: training's default) when ``compiled``."""
    out = {}
    for column in (*columns, KD) if teacher is not None else columns:
        model = copy.deepcopy(base)
        run_cfg = cfg.replace(method="transmix" if column.startswith("transmix") else "deit")
        fused = {"fused": True} if cfg.fused else {}
        opt = create_optimizer_v2(model, opt=run_cfg.opt, lr=run_cfg.lr, weight_decay=run_cfg.weight_decay, **fused)
        forward = compile_with(model, compile_mode) if compiled else model
        if column == "timm":
            out[column] = TimmStep(run_cfg, forward, opt, num_classes, device)
            continue
        if column == KD:
            run_cfg = run_cfg.replace(distillation="soft", teacher="(a teacher of random weights)")
        stepper = Stepper(run_cfg, forward, opt, num_classes, device, (size, size), capture_model=model,
                          teacher=teacher if column == KD else None)  # fmt: skip
        if column == "transmix-explicit":
            stepper.capture.remove()
            stepper.capture = ExplicitClassAttention(model)
        out[column] = stepper
    return out


def bench(cfg: TrainConfig, steps: int = 10, rounds: int = 7, warmup: int = 3, in_chans: int = 1, img_size: int = 28,
          num_classes: int = 10, modes: tuple[str, ...] = ("eager",), precisions: tuple[str, ...] = ("fp32",),
          peak_tflops: float | None = None, progress: bool = True,
          teacher_model: str | None = None) -> list[BenchRow]:  # fmt: skip
    """Every column in every configuration, ``modes`` x ``precisions``, as rows; with ``teacher_model``, also the
    ``deit+kd`` column."""
    import timm

    from transmix.tools.cost import forward_flops

    flops, _ = forward_flops(cfg.model, img_size, in_chans, num_classes)
    device, base, batches = setup(cfg, steps, in_chans, img_size, num_classes)
    teacher = None
    if teacher_model:
        teacher = create_model(teacher_model, num_classes=num_classes, in_chans=in_chans, img_size=img_size).to(device)
        teacher.eval().requires_grad_(False)
    name = device_name(device)
    rows = []
    for mode, precision in [(m, p) for m in modes for p in precisions]:
        started = time.perf_counter()
        run_cfg = cfg.replace(precision=precision)
        columns = steppers(run_cfg, base, num_classes, img_size, device, mode == "compiled", teacher)
        label = f"{mode} {precision}" if progress else ""
        times, memory = measure(columns, batches, rounds, warmup, device, cfg.seed, label)
        if progress:
            print(f"{mode} {precision}: {time.perf_counter() - started:.0f} s", flush=True)
        for column in columns:
            ms = statistics.median(times[column]) * 1e3
            vs_deit = _paired([t / d for t, d in zip(times[column], times["deit"], strict=True)])
            vs_timm = _paired([m / t for t, m in zip(times[column], times["timm"], strict=True)])
            tflops = 3 * flops * cfg.batch_size / (ms / 1e3) / 1e12
            rows.append(BenchRow(cfg.model, cfg.batch_size, img_size, mode, precision, column, ms,
                                 cfg.batch_size / ms * 1e3, *vs_deit, *vs_timm, memory[column], tflops,
                                 tflops / peak_tflops if peak_tflops else float("nan"), rounds, name,
                                 str(torch.__version__), str(timm.__version__), torch.get_num_threads()))  # fmt: skip
    return rows


def measure(steppers: dict, batches: list, rounds: int, warmup: int, device: torch.device, seed: int,
             label: str = "") -> tuple[dict[str, list[float]], dict[str, float]]:  # fmt: skip
    """Seconds per step of every column in each measured round, and each column's peak memory (warm-up round 0);
    with a ``label``, a line on stderr as each round ends."""
    times: dict[str, list[float]] = {c: [] for c in steppers}
    memory: dict[str, float] = {}
    for r in range(warmup + rounds):
        order = list(steppers.items())
        if r % 2:
            order.reverse()
        for column, stepper in order:
            # Every round and every column start from the same seeds: rounds repeat the same work, so the spread of
            # a per-round ratio is the machine's noise, not a different mix of Mixup and CutMix batches.
            gen = torch.Generator().manual_seed(seed)
            np.random.seed(seed)  # timm's Mixup draws from NumPy's global RNG
            if device.type == "cuda" and r == 0:
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t0 = time.perf_counter()
            for x, y in batches:
                stepper(x, y, gen)
            sync(device)
            if r == 0:
                memory[column] = _peak_memory_mb(device)
            if r >= warmup:
                times[column].append((time.perf_counter() - t0) / len(batches))
        if label:
            kind = "warm-up" if r < warmup else "measured"
            print(f"{label}: round {r + 1} of {warmup + rounds} ({kind}) done", file=sys.stderr, flush=True)
    return times, memory


def _paired(ratios: list[float]) -> tuple[float, float, float]:
    """Mean of per-round ratios and its 95% t-interval."""
    from transmix.reporting.stats import t_interval

    ci = t_interval(ratios)
    return float(ci["mean"]), float(ci["low"]), float(ci["high"])


def write_csv(rows: list, path: str | Path, append: bool = True) -> Path:
    """Rows (dataclasses of one kind) as CSV, appended to an existing file of the same columns, so one file can
    hold several runs (or, without ``append``, replacing it: a table that means one run only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not append or not path.exists()
    with path.open("a" if append else "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(rows[0])])
        if new:
            writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    return path


def format_table(rows: list[BenchRow]) -> str:
    first = rows[0]
    lines = [f"model {first.model}, batch {first.batch_size}, {first.img_size} px, {first.device}, "
             f"{first.threads} thread(s), torch {first.torch}, timm {first.timm}, {first.rounds} rounds",
             f"{'mode':9}{'prec':6}{'column':19}{'ms/step':>9}{'img/s':>9}{'vs deit [95% CI]':>26}"
             f"{'timm/this [95% CI]':>26}{'peak MB':>9}{'TFLOP/s':>9}{'of peak':>8}"]  # fmt: skip
    for r in rows:
        lines.append(f"{r.mode:9}{r.precision:6}{r.column:19}{r.ms_per_step:9.2f}{r.images_per_second:9.0f}"
                     f"{_ci(r.vs_deit, r.vs_deit_low, r.vs_deit_high):>26}"
                     f"{_ci(r.speedup_vs_timm, r.speedup_vs_timm_low, r.speedup_vs_timm_high):>26}"
                     f"{r.peak_memory_mb:9.0f}{r.achieved_tflops:9.3f}"
                     f"{'-' if math.isnan(r.peak_fraction) else f'{r.peak_fraction:.1%}':>8}")  # fmt: skip
    lines.append("vs deit < 1: faster than this package's deit step; timm/this > 1: faster than timm's own parts. "
                 "Ratios are means of per-round paired ratios with a t-interval over rounds.")  # fmt: skip
    return "\n".join(lines)


def _ci(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"
