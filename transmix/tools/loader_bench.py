"""How fast the class-folder loader delivers training batches, alone: its ceiling, by the number of workers.

The loader is the training split itself (the ``loader`` key's: PIL in the workers, or decoded and augmented on the
device; workers that live for the run, uint8 batches finished on the device), timed without a model. Each worker
count gets a fresh split. Its first ``workers x PREFETCH`` batches (1 without workers) are not timed: the workers
start, and the batches they made ready meanwhile would be counted at no cost, which overstated many workers many
times over. Then ``rounds`` rounds of ``batches`` batches (rounded up to whole turns of the workers, whose batches
arrive in bursts) of the same epoch are timed, each arriving as fast as the workers make it. Images per second are
reported as the mean over rounds with a 95% t-interval. A GPU needs ``images/s`` of the step (``transmix bench``)
from its loader: the ratio says whether a run would be loader-bound.

Without ``--data-dir`` it reads a generated tree of JPEGs of ImageNet's typical size (about 400 x 350 pixels), so
the decode and augmentation cost is ImageNet's, not that of tiny images. Its distinct images are linked again
under other names until one epoch holds every batch the measurement needs.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from transmix.config.run import TrainConfig
from transmix.config.strict import ConfigError
from transmix.data import train_split
from transmix.data.imagefolder import PREFETCH
from transmix.data.loader import allocated_cpus
from transmix.reporting.stats import t_interval
from transmix.training.runtime import resolve_device

IMAGENET_LIKE = {"classes": 8, "per_class": (96, 2), "size": (400, 350)}  # generated tree: 768 training images


@dataclass(frozen=True)
class LoaderRow:
    """One worker count, as a row of the CSV."""

    workers: int
    images_per_second: float  # mean over rounds
    low: float  # 95% t-interval over rounds
    high: float
    per_worker: float  # images/s per loading process (workers, or the trainer itself with 0)
    batch_size: int
    img_size: int
    aa: str
    rounds: int
    batches: int
    device: str
    cpus: int  # CPUs this process may use
    torch: str
    loader: str = "pil"  # the `loader` key: pil (decoded and augmented in the workers) or device


def bench_loader(cfg: TrainConfig, workers: list[int], batches: int = 5, rounds: int = 3) -> list[LoaderRow]:
    """Images/s of ``cfg``'s training split for each worker count (``cfg.data_dir`` must hold a class-folder tree)."""
    device = resolve_device(cfg.device)
    cpus = allocated_cpus()
    rows = []
    for count in workers:
        split = train_split(cfg.replace(num_workers=count), (0, 1), torch.Generator(), device)
        per_epoch = len(split.epoch_indices(0)) // cfg.batch_size
        most = batches_needed(workers, batches, rounds)  # checked before the first measurement, for every count
        if per_epoch < most:
            split.close()
            raise ConfigError(f"{cfg.data_dir} gives {per_epoch} batches of {cfg.batch_size} per epoch; "
                              f"{max(workers)} worker(s) and {rounds} rounds of {batches} need "
                              f"{most}: lower them or the batch size")  # fmt: skip
        stream = split.batches(0, 0)
        for _ in range(untimed_batches(count)):  # the workers start; what they made ready meanwhile is drained
            next(stream)
        speeds, timed = [], whole_turns(batches, count)
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _, (x, _) in zip(range(timed), stream, strict=False):
                if x.is_cuda:
                    torch.cuda.synchronize(device)
            speeds.append(timed * cfg.batch_size / (time.perf_counter() - t0))
        stream.close()
        split.close()
        ci = t_interval(speeds)
        rows.append(LoaderRow(count, float(ci["mean"]), float(ci["low"]), float(ci["high"]),
                              float(ci["mean"]) / max(count, 1), cfg.batch_size, cfg.img_size, cfg.aa, rounds,
                              timed, str(device), cpus, str(torch.__version__), cfg.loader))  # fmt: skip
        print(f"loader {cfg.loader}, {count} worker(s): {ci['mean']:.0f} images/s [{ci['low']:.0f}, {ci['high']:.0f}]",
              flush=True)  # fmt: skip
    return rows


def untimed_batches(workers: int) -> int:
    """Batches drained before timing: every batch the workers can hold ready (the first, without workers)."""
    return max(1, workers * PREFETCH)


def whole_turns(batches: int, workers: int) -> int:
    """``batches`` rounded up to whole turns of the workers. A ``DataLoader`` hands batches to its workers in turn, so
    they arrive in bursts of ``workers``; a timed stretch that starts or ends inside a burst counts batches that were
    already waiting and overstates the loader (and a step fed by it)."""
    return -(-batches // max(workers, 1)) * max(workers, 1)


def batches_needed(workers: list[int], batches: int, rounds: int) -> int:
    """Batches one epoch must hold for :func:`bench_loader` with these arguments (its largest need over counts)."""
    return max(untimed_batches(c) + rounds * whole_turns(batches, c) for c in workers)


def images_needed(cfg: TrainConfig, workers: list[int], batches: int, rounds: int) -> int:
    """Training images one epoch must hold for :func:`bench_loader` with these arguments."""
    return cfg.batch_size * batches_needed(workers, batches, rounds)


def generated_tree(root: Path, images: int = 0) -> Path:
    """A class-folder tree of JPEGs at ImageNet's typical size (see :data:`IMAGENET_LIKE`) with at least ``images``
    training images: the distinct ones are hard-linked again under other names (decoding costs the same)."""
    from transmix.data.synthetic import make_class_folders

    tree = make_class_folders(root, IMAGENET_LIKE["classes"], IMAGENET_LIKE["per_class"], IMAGENET_LIKE["size"],
                              suffix=".jpg")  # fmt: skip
    copies = math.ceil(images / (IMAGENET_LIKE["classes"] * IMAGENET_LIKE["per_class"][0])) - 1
    for folder in sorted((tree / "train").iterdir()):
        for original in sorted(folder.iterdir()):
            for k in range(1, copies + 1):
                os.link(original, original.with_name(f"{original.stem}-{k}{original.suffix}"))
    return tree


def run(cfg: TrainConfig, workers: list[int], batches: int, rounds: int, data_dir: str | None) -> list[LoaderRow]:
    """:func:`bench_loader` on ``data_dir``, or on a generated tree (see :data:`IMAGENET_LIKE`) without one."""
    if data_dir:
        return bench_loader(cfg.replace(data_dir=data_dir), workers, batches, rounds)
    with tempfile.TemporaryDirectory(prefix="transmix-loader-") as tmp:
        tree = generated_tree(Path(tmp), images_needed(cfg, workers, batches, rounds))
        return bench_loader(cfg.replace(data_dir=str(tree)), workers, batches, rounds)
