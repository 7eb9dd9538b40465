"""The cost of a study in GPU-hours, from counted FLOPs and a GPU's throughput.

``GPU-hours = 3 * F * images * epochs / (peak * utilization) / 3600`` per run, where ``F`` is the forward FLOPs of
one image, counted by ``torch.utils.flop_counter`` on the real timm model at the study's ``img_size`` (timm's
attention switched to its explicit matrices while counting, so that the attention products are counted too), and
3x forward is the usual estimate of forward + backward. ``peak * utilization`` is the training throughput the GPU
reaches: measured on a GPU with ``transmix bench --set device=cuda --set precision=bf16`` (images/s converts to it
as ``images/s * 3 * F``), or assumed and then stated beside every figure. The model is built for the study's data
(one channel and 10 classes for Fashion-MNIST, 100 classes for CIFAR-100, ImageNet's 1000 otherwise), and the
images per epoch are the study's: Fashion-MNIST's ``train_subset`` or its 60,000, CIFAR's 50,000, else ImageNet-1k's.
A run of a few minutes reads better in minutes, so the table gives both.

With a device's measured speed instead of an assumed one (:func:`read_measured`: a folder the prepared GPU check
wrote, ``results/gpu/<device>/``), each run is priced at the images/s of the compiled bf16 DeiT-S step of its method
in that folder's ``bench.csv`` (TransMix's own step for ``transmix`` runs, the ``deit`` step for every other method;
another model at the same TFLOP/s, by its counted FLOPs), twice: fed (the step at its own rate, the lower bound) and
loader-bound (the step fed at the rate the folder's ``loader.csv`` measured with at most 16 CPU workers per GPU,
i.e. ``min(step, loader)``), for each loader path the folder measured (``pil``, PIL in the workers, for rows that
do not say; ``device`` where the images are decoded and augmented on the GPU).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from transmix.config.study import Study
from transmix.errors import Failure

log = logging.getLogger(__name__)
IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k's training split
MEASURED_MODEL = "deit_small_patch16_224"  # the step the GPU check measures, at 224 px, 3 channels, 1000 classes
LOADER_WORKERS = 16  # CPU workers a GPU gets on a typical node: the loader rows that count


@dataclass(frozen=True)
class Cost:
    model: str
    params_m: float
    gflops: float  # forward, one image
    gpu_hours: float  # one run of the study's epochs
    runs: int

    @property
    def minutes(self) -> float:
        """Minutes of one run."""
        return self.gpu_hours * 60


def data_shape(dataset: str) -> tuple[int, int]:
    """(input channels, classes) of a study's dataset: the head and the patch embedding are counted as trained."""
    return {"fashion_mnist": (1, 10), "cifar10": (3, 10), "cifar100": (3, 100)}.get(dataset, (3, 1000))


def forward_flops(model_name: str, img_size: int, in_chans: int = 3, num_classes: int = 1000) -> tuple[float, float]:
    """(forward FLOPs of one image, parameters) of a model built as the study builds it, counted on CPU (with
    autograd on: the counter's module tracker needs it)."""
    import torch
    from timm.layers import set_fused_attn
    from torch.utils.flop_counter import FlopCounterMode

    from transmix.method.models import create_model

    set_fused_attn(False)  # the fused kernel is not counted by FlopCounterMode; the explicit matmuls are
    try:
        model = create_model(model_name, num_classes=num_classes, in_chans=in_chans, img_size=img_size).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_chans, img_size, img_size))
    finally:
        set_fused_attn(True)
    return float(counter.get_total_flops()), float(sum(p.numel() for p in model.parameters()))


def train_images(config: str | Path) -> int:
    """Training images per epoch of a study: Fashion-MNIST's ``train_subset`` (0: all 60,000), CIFAR's 50,000, else
    ImageNet-1k's (a class-folder study's size is not known without reading its tree: pass ``--images``)."""
    from transmix.data.cifar import TRAIN_IMAGES
    from transmix.data.prepare import TRAIN_IMAGES as FASHION_TRAIN_IMAGES

    study = Study(yaml.safe_load(Path(config).read_text()))
    if study.dataset == "fashion_mnist":
        subset = study.default("train_subset")
        return min(subset, FASHION_TRAIN_IMAGES) if subset > 0 else FASHION_TRAIN_IMAGES
    return TRAIN_IMAGES if study.dataset in ("cifar10", "cifar100") else IMAGENET_TRAIN_IMAGES


@dataclass(frozen=True)
class StudyModel:
    """One model of a study as its cost needs it: its counted FLOPs, its epochs and its runs by method."""

    name: str
    flops: float  # forward, one image
    params: float
    epochs: int  # cooldown included
    runs: dict[str, int]  # method -> runs (one per seed)


def study_models(config: str | Path) -> list[StudyModel]:
    """Every model of a study config, its FLOPs counted as the study builds it (the slow part: a forward each)."""
    study = Study(yaml.safe_load(Path(config).read_text()))
    in_chans, num_classes = data_shape(study.dataset)
    out = []
    for number, name in enumerate(study.models, 1):
        log.info("counting FLOPs of %s (%d of %d)", name, number, len(study.models))
        cfg = study.model_config(name)
        flops, params = forward_flops(name, cfg.img_size, in_chans, num_classes)
        runs: dict[str, int] = {}
        for method in [*study.methods, *study.more_methods.get(name, [])]:
            runs[method] = runs.get(method, 0) + len(study.seeds)
        out.append(StudyModel(name, flops, params, cfg.total_epochs, runs))
    return out


def study_cost(config: str | Path, tflops: float, images: int = IMAGENET_TRAIN_IMAGES) -> list[Cost]:
    """GPU-hours per model of a study config, at ``tflops`` sustained training throughput (TFLOP/s)."""
    out = []
    for m in study_models(config):
        hours = 3 * m.flops * images * m.epochs / (tflops * 1e12) / 3600
        out.append(Cost(m.name, m.params / 1e6, m.flops / 1e9, hours, sum(m.runs.values())))
    return out


class MeasuredSpeedMissing(Failure):
    """A folder given as a device's measured speed lacks what the cost needs; the message names what and where."""


@dataclass(frozen=True)
class Measured:
    """A device's speed, as one GPU check's folder measured it."""

    folder: str
    device: str
    batch_size: int
    img_size: int
    step: dict[str, float]  # method column of bench.csv (deit, transmix) -> images/s of the compiled DeiT-S step
    loader: dict[str, tuple[int, float]]  # loader path -> (workers, images/s): its fastest with <= LOADER_WORKERS

    def step_rate(self, method: str) -> float:
        """Images/s of the measured model's step for a run of ``method``: TransMix's own, the deit step otherwise
        (the other mixes cost what DeiT's does)."""
        return self.step["transmix"] if method == "transmix" and "transmix" in self.step else self.step["deit"]


def read_measured(folder: str | Path) -> Measured:
    """The compiled bf16 DeiT-S step's images/s per method (the last run in ``bench.csv`` where it holds several) and
    the loader's best images/s with at most :data:`LOADER_WORKERS` workers, per loader path (a ``path`` or ``loader``
    column of a ``loader*.csv``, else the file's name after ``loader-``, else ``pil``: the loader before it had
    another path).

    Raises:
        MeasuredSpeedMissing: no such folder, no ``bench.csv`` or ``loader.csv``, or no row of the step in them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MeasuredSpeedMissing(f"--measured {folder}: no such folder (give one the GPU check wrote, such as "
                                   "results/gpu/nvidia-h200)")  # fmt: skip
    bench_csv = folder / "bench.csv"
    loaders = sorted(folder.glob("loader*.csv"))
    for path, what in ((bench_csv, "the step's speed"), (folder / "loader.csv", "the loader's speed")):
        if not path.is_file() and not (path.name == "loader.csv" and loaders):
            raise MeasuredSpeedMissing(f"--measured {folder}: {path.name} ({what}) is missing; the GPU check "
                                       "(python -m transmix.tools.gpu_check) writes it")  # fmt: skip
    rows = [r for r in csv.DictReader(bench_csv.open()) if r["model"] == MEASURED_MODEL and r["mode"] == "compiled"]
    rows = [r for r in rows if r["precision"] == "bf16"] or rows
    if not any(r["column"] == "deit" for r in rows):
        raise MeasuredSpeedMissing(f"--measured {folder}: bench.csv has no compiled {MEASURED_MODEL} row of the deit "
                                   "step")  # fmt: skip
    step = {r["column"]: float(r["images_per_second"]) for r in rows if r["column"] in ("deit", "transmix")}
    last = rows[-1]
    loader: dict[str, tuple[int, float]] = {}
    for path in loaders:
        named = path.stem.removeprefix("loader-") if path.stem != "loader" else "pil"
        for r in csv.DictReader(path.open()):
            workers, speed = int(r["workers"]), float(r["images_per_second"])
            kind = r.get("path") or r.get("loader") or named
            if workers <= LOADER_WORKERS and speed > loader.get(kind, (0, 0.0))[1]:
                loader[kind] = (workers, speed)
    if not loader:
        raise MeasuredSpeedMissing(f"--measured {folder}: no loader row with at most {LOADER_WORKERS} workers in "
                                   f"{', '.join(p.name for p in loaders)}")  # fmt: skip
    return Measured(str(folder), last["device"], int(last["batch_size"]), int(last["img_size"]), step, loader)


@dataclass(frozen=True)
class MeasuredCost:
    """One model's runs at a measured speed; hours are of all its runs."""

    model: str
    gflops: float
    runs: int
    step_images_per_second: float  # the deit step's, at this model's FLOPs
    fed_hours: float  # every step at its own rate
    loader_hours: dict[str, float]  # loader path -> every step at min(step, loader)


def measured_cost(config: str | Path, measured: Measured, images: int = IMAGENET_TRAIN_IMAGES) -> list[MeasuredCost]:
    """GPU-hours per model of a study config at ``measured``'s speed: each model at the measured step's TFLOP/s
    (its images/s scaled by the FLOPs of DeiT-S over the model's), fed and bound by each loader path."""
    reference, _ = forward_flops(MEASURED_MODEL, measured.img_size)
    out = []
    for m in study_models(config):
        fed, bound = 0.0, dict.fromkeys(measured.loader, 0.0)
        for method, runs in m.runs.items():
            step = measured.step_rate(method) * reference / m.flops
            fed += runs * images * m.epochs / step / 3600
            for path, (_, speed) in measured.loader.items():
                bound[path] += runs * images * m.epochs / min(step, speed) / 3600
        deit = measured.step["deit"] * reference / m.flops
        out.append(MeasuredCost(m.name, m.flops / 1e9, sum(m.runs.values()), deit, fed, bound))
    return out


def format_measured(costs: list[MeasuredCost], measured: Measured, images: int) -> str:
    """The table of :func:`measured_cost`, headed by the rates it used and where they come from."""
    steps = ", ".join(f"{column} {speed:.0f}" for column, speed in measured.step.items())
    paths = list(measured.loader)
    lines = [f"GPU-hours at the speed measured in {measured.folder} ({measured.device}), {images} images per epoch",
             f"step: the compiled bf16 {MEASURED_MODEL} step at batch {measured.batch_size}, images/s: {steps}",
             "  (transmix runs at transmix's rate, the other methods at deit's; other models at the same TFLOP/s)",
             *(f"loader ({path}): {speed:.0f} images/s with {workers} workers, its fastest with at most "
               f"{LOADER_WORKERS} per GPU" for path, (workers, speed) in measured.loader.items()),
             "fed: the step at its own rate; loader-bound: at min(step, loader)",
             f"{'model':34} {'GFLOPs':>8} {'step img/s':>10} {'runs':>5} {'h fed':>9}"
             + "".join(f" {f'h {p}-bound':>14}" for p in paths)]  # fmt: skip
    for c in costs:
        lines.append(f"{c.model:34} {c.gflops:8.3f} {c.step_images_per_second:10.0f} {c.runs:5d} {c.fed_hours:9.2f}"
                     + "".join(f" {c.loader_hours[p]:14.2f}" for p in paths))  # fmt: skip
    fed = sum(c.fed_hours for c in costs)
    bound = {p: sum(c.loader_hours[p] for c in costs) for p in paths}
    lines.append(f"{'study total':34} {'':>8} {'':>10} {sum(c.runs for c in costs):5d} {fed:9.2f}"
                 + "".join(f" {bound[p]:14.2f}" for p in paths))  # fmt: skip
    return "\n".join(lines)


def format_table(costs: list[Cost], tflops: float, images: int) -> str:
    lines = [f"GPU-hours at {tflops:g} TFLOP/s sustained, {images} images per epoch (3 x forward FLOPs per image)",
             f"{'model':34} {'params (M)':>10} {'GFLOPs':>8} {'min / run':>9} {'h / run':>9} {'runs':>5} "
             f"{'h total':>9}"]  # fmt: skip
    for c in costs:
        lines.append(f"{c.model:34} {c.params_m:10.1f} {c.gflops:8.3f} {c.minutes:9.2f} {c.gpu_hours:9.2f} "
                     f"{c.runs:5d} {c.gpu_hours * c.runs:9.2f}")  # fmt: skip
    total = sum(c.gpu_hours * c.runs for c in costs)
    lines.append(f"{'study total':34} {'':>10} {'':>8} {'':>9} {'':>9} {'':>5} {total:9.2f} ({total * 60:.1f} min)")
    return "\n".join(lines)
