"""The training step fed by a real loader, against the same step on batches already on the device, in one process.

``transmix bench`` times a step on synthetic batches, the rate a GPU could train at; ``transmix bench-loader`` times a
loader alone, the rate it could feed. Neither shows what a run gets when both share the machine: the loader's
workers and the trainer compete for the CPUs, and the device path's decoding competes with the step for the GPU.
Here one compiled (or eager) deit step trains on each source in turn, from a class-folder tree of generated JPEGs
of ImageNet's size (:func:`transmix.tools.loader_bench.generated_tree`):

* ``synthetic``: the bench's batches, already on the device;
* one row per ``loader`` path (``pil``, ``device``): the training split itself, with ``workers`` worker processes.

A fed source first trains on every batch its workers could have made ready before the clock starts (as the loader
bench drains them), then ``rounds`` rounds of ``steps`` steps back to back (rounded up to whole turns of the
workers, whose batches arrive in bursts), so a round is fed at the loader's steady rate, not from its queue.
Images/s are the mean over rounds with a 95% t-interval; ``vs_synthetic`` is each round's images/s over the
synthetic round of the same index (a ratio of 1 means the step never waited for data).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from transmix.config.run import TrainConfig
from transmix.data.loader import allocated_cpus
from transmix.reporting.stats import t_interval
from transmix.tools import bench as bench_mod
from transmix.tools.loader_bench import untimed_batches, whole_turns
from transmix.training.runtime import device_name

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class FedRow:
    """One source of batches for the same step, as a row of the CSV."""

    source: str  # synthetic, or the loader path: pil | device
    workers: int  # loader worker processes (0 for synthetic)
    images_per_second: float  # mean over rounds
    low: float  # 95% t-interval over rounds
    high: float
    vs_synthetic: float  # mean of per-round ratios to the synthetic rounds
    vs_synthetic_low: float
    vs_synthetic_high: float
    model: str
    batch_size: int
    img_size: int
    compiled: bool
    precision: str
    rounds: int
    steps: int
    device: str
    cpus: int
    torch: str


def bench_fed(cfg: TrainConfig, loaders: tuple[str, ...], workers: int, steps: int = 10, rounds: int = 3,
              warmup: int = 3) -> list[FedRow]:  # fmt: skip
    """The deit step of ``cfg`` (its model, batch, precision and ``compile``) on synthetic batches and through each
    of ``loaders``; ``cfg.data_dir`` must hold a class-folder tree with at least :func:`images_needed` training
    images."""
    from transmix.data import train_split
    from transmix.data.imagefolder import image_folder_classes

    classes = len(image_folder_classes(cfg.data_dir))
    device, base, batches = bench_mod.setup(cfg, steps, 3, cfg.img_size, classes)
    step = bench_mod.steppers(cfg, base, classes, cfg.img_size, device, cfg.compile, columns=("deit",))["deit"]
    gen = torch.Generator().manual_seed(cfg.seed)
    for _, (x, y) in zip(range(warmup), itertools.cycle(batches), strict=False):  # compilation happens here
        step(x, y, gen)
    bench_mod.sync(device)
    steps = whole_turns(steps, workers)  # fed steps start and end on a whole turn of the workers
    speeds = {SYNTHETIC: [_timed(step, itertools.cycle(batches), steps, gen, device, cfg.batch_size)
                          for _ in range(rounds)]}  # fmt: skip
    for loader in loaders:
        split = train_split(cfg.replace(loader=loader, num_workers=workers), (0, 1), torch.Generator(), device)
        stream = split.batches(0, 0)
        for _, (x, y) in zip(range(untimed_batches(workers)), stream, strict=False):
            step(x, y, gen)
        speeds[loader] = [_timed(step, stream, steps, gen, device, cfg.batch_size) for _ in range(rounds)]
        split.close()
        print(f"{loader}, {workers} worker(s): {sum(speeds[loader]) / rounds:.0f} images/s fed "
              f"(synthetic {sum(speeds[SYNTHETIC]) / rounds:.0f})", flush=True)  # fmt: skip
    name, cpus = device_name(device), allocated_cpus()
    rows = []
    for source, values in speeds.items():
        ci = t_interval(values)
        ratio = t_interval([v / s for v, s in zip(values, speeds[SYNTHETIC], strict=True)])
        rows.append(FedRow(source, 0 if source == SYNTHETIC else workers, float(ci["mean"]), float(ci["low"]),
                           float(ci["high"]), float(ratio["mean"]), float(ratio["low"]), float(ratio["high"]),
                           cfg.model, cfg.batch_size, cfg.img_size, cfg.compile, cfg.precision, rounds, steps, name,
                           cpus, str(torch.__version__)))  # fmt: skip
    return rows


def images_needed(cfg: TrainConfig, workers: int, steps: int, rounds: int) -> int:
    """Training images one epoch must hold for :func:`bench_fed`: the drained batches and every timed one."""
    return cfg.batch_size * (untimed_batches(workers) + rounds * whole_turns(steps, workers))


def _timed(step: bench_mod.Stepper, stream: Iterator, steps: int, gen: torch.Generator, device: torch.device,
           batch: int) -> float:  # fmt: skip
    """Images/s of ``steps`` steps on the next batches of ``stream``, the device drained at both ends."""
    bench_mod.sync(device)
    started = time.perf_counter()
    for _, (x, y) in zip(range(steps), stream, strict=False):
        step(x, y, gen)
    bench_mod.sync(device)
    return steps * batch / (time.perf_counter() - started)
