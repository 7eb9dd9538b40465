"""Where TransMix's extra step time goes: the deit and transmix steps under ``torch.profiler``, compared op by op.

The bench gives the ratio of the two steps' times; this says which operators make the difference. Both steps are
the bench's own (:func:`transmix.tools.bench.steppers`, eager), on the same model, batches and mixing draws. Each runs
``warmup`` steps, then ``steps`` profiled steps, in ``rounds`` rounds of alternating order (as the bench alternates),
so that a machine that slows down or speeds up meanwhile weighs on both alike. The profiler's tables of each
(``key_averages()``, one entry per operator name) are added over rounds and joined on the name, and the operators
are ranked by the absolute difference of their self time per step on the device that runs them: the CUDA kernels an
operator launched on a GPU (its CPU time there is mostly launch overhead, which the GPU hides), its CPU time on a
CPU. Self time, not total time, so that a kernel is counted once, under the operator that launched it, and not again
under every operator that called it.

    python -m transmix.tools.profile_step --set device=cuda --set precision=bf16 --model deit_small_patch16_224
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from transmix.config.run import TrainConfig

TOP = 15  # rows kept: the largest differences


@dataclass(frozen=True)
class ProfileRow:
    """One operator, both steps: calls over the profiled steps, self time per step on the device."""

    op: str
    calls_deit: int
    calls_transmix: int
    self_ms_deit: float  # per step
    self_ms_transmix: float
    difference_ms: float  # transmix - deit, per step
    steps: int
    device_time: str  # "cuda" (the kernels' time) or "cpu"


@dataclass(frozen=True)
class OpTime:
    """An operator's calls and self time (microseconds) over the profiled steps of one step function."""

    calls: int
    self_us: float


def profile(cfg: TrainConfig, steps: int = 5, warmup: int = 3, in_chans: int = 1, img_size: int = 28,
            num_classes: int = 10, rounds: int = 2) -> tuple[list[ProfileRow], dict[str, object]]:  # fmt: skip
    """Every operator of the deit and transmix steps, the largest differences first, and a summary: each step's
    self time per step, the mixing modes of the profiled steps of a round (TransMix re-weights CutMix batches only),
    the operators only the transmix step calls, and those it calls more often than deit's (the largest difference
    in time first)."""
    from transmix.tools import bench

    device, base, batches = bench.setup(cfg, steps, in_chans, img_size, num_classes)
    columns = bench.steppers(cfg, base, num_classes, img_size, device, compiled=False, columns=("deit", "transmix"))
    tables: dict[str, dict[str, OpTime]] = {c: {} for c in columns}
    modes: list[str] = []
    for r in range(rounds):
        order = list(columns.items())
        for column, stepper in reversed(order) if r % 2 else order:
            table, modes = profile_one(stepper, batches, warmup if r == 0 else 0, device, cfg.seed)
            for op, t in table.items():
                before = tables[column].get(op, OpTime(0, 0.0))
                tables[column][op] = OpTime(before.calls + t.calls, before.self_us + t.self_us)
    profiled = steps * rounds
    rows = compare(tables["deit"], tables["transmix"], profiled, device.type)
    summary = {
        "self_ms_per_step": {c: round(sum(t.self_us for t in table.values()) / profiled / 1e3, 3)
                             for c, table in tables.items()},
        "modes": modes,
        "only_in_transmix": [r.op for r in rows if r.calls_deit == 0],
        "more_calls_in_transmix": [r.op for r in rows if r.calls_transmix > r.calls_deit],
    }  # fmt: skip
    return rows, summary


def profile_one(stepper: object, batches: list, warmup: int, device: torch.device,
                seed: int) -> tuple[dict[str, OpTime], list[str]]:  # fmt: skip
    """``stepper``'s operators over one pass of ``batches`` after ``warmup`` unprofiled steps (allocator, cuDNN and
    cuBLAS choices settle there), and the mixing mode of each profiled step. The mixing draws restart from ``seed``,
    so two step functions profiled here mix the same way."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from transmix.tools.bench import sync

    gen = torch.Generator().manual_seed(seed)
    for i in range(warmup):
        stepper(*batches[i % len(batches)], gen)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    gen = torch.Generator().manual_seed(seed)
    modes = []
    with torch_profile(activities=activities) as prof:
        for x, y in batches:
            modes.append(stepper(x, y, gen).mode)
        sync(device)
    table = {}
    for event in prof.key_averages():
        if device.type == "cuda":  # operators only: a kernel's time is already its launching operator's
            if event.device_type != torch.autograd.DeviceType.CPU:
                continue
            self_us = float(event.self_device_time_total)
        else:
            self_us = float(event.self_cpu_time_total)
        table[event.key] = OpTime(int(event.count), self_us)
    return table, modes


def compare(deit: dict[str, OpTime], transmix: dict[str, OpTime], steps: int, device_time: str) -> list[ProfileRow]:
    """Both tables joined on the operator's name (an operator one step lacks has 0 calls there), the largest absolute
    difference in self time first; ties (operators without device time, such as the ones a GPU step runs on the
    host only) by the difference in calls."""
    none = OpTime(0, 0.0)
    rows = []
    for op in sorted(deit.keys() | transmix.keys()):
        d, t = deit.get(op, none), transmix.get(op, none)
        rows.append(ProfileRow(op, d.calls, t.calls, d.self_us / steps / 1e3, t.self_us / steps / 1e3,
                               (t.self_us - d.self_us) / steps / 1e3, steps, device_time))  # fmt: skip
    return sorted(rows, key=lambda r: (-abs(r.difference_ms), -abs(r.calls_transmix - r.calls_deit), r.op))


def write_csv(rows: list[ProfileRow], path: str | Path, top: int = TOP) -> Path:
    """The ``top`` rows as CSV, replacing the file: one profile per file."""
    from transmix.tools.bench import write_csv as write_rows

    return write_rows(rows[:top], path, append=False)


def format_table(rows: list[ProfileRow], top: int = TOP) -> str:
    """The ``top`` rows as a plain table, for a terminal."""
    lines = [f"{'op':56}{'calls deit':>11}{'transmix':>9}{'ms deit':>9}{'transmix':>9}{'diff':>9}"]
    for r in rows[:top]:
        lines.append(f"{r.op[:55]:56}{r.calls_deit:11d}{r.calls_transmix:9d}{r.self_ms_deit:9.3f}"
                     f"{r.self_ms_transmix:9.3f}{r.difference_ms:+9.3f}")  # fmt: skip
    first = rows[0] if rows else None
    where = f"{first.device_time} self time, ms per step over {first.steps} steps" if first else "no operators"
    return "\n".join([*lines, where])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transmix.tools.profile_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", default="vit_micro_patch4_28")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--img-size", type=int, help="default: 28 for a micro model, else 224")
    parser.add_argument("--in-chans", type=int, help="default: 1 for a micro model, else 3")
    parser.add_argument("--num-classes", type=int, help="default: 10 for a micro model, else 1000")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps of each method")
    parser.add_argument("--warmup", type=int, default=3, help="steps before profiling")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of alternating order (default: %(default)s)")
    parser.add_argument("--top", type=int, default=TOP, help="rows shown (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the rows to this CSV")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any train config key, e.g. device=cuda precision=bf16 fused=true")  # fmt: skip
    args = parser.parse_args(argv)
    from transmix.config.run import load

    micro = "_28" in args.model
    cfg = load(None, [f"model={args.model}", f"batch_size={args.batch_size}", *args.set])
    rows, summary = profile(cfg, args.steps, args.warmup, args.in_chans or (1 if micro else 3),
                            args.img_size or (28 if micro else 224),
                            args.num_classes or (10 if micro else 1000), args.rounds)  # fmt: skip
    print(format_table(rows, args.top))
    print(summary)
    if args.out:
        print(f"wrote {write_csv(rows, args.out, args.top)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
