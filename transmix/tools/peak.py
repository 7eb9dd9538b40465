"""What each known speed-up gives the compiled deit step: one table of variants, each timed alone, within a budget.

The bench compares methods at batch 256; this table asks how close the step itself can get to the device's peak.
Each variant (a ``torch.compile`` mode, fused or foreach AdamW, the batch size, timm's fast LayerNorm) trains the
bench's ``deit`` step (:func:`transmix.tools.bench.steppers`, the same model, batches and mixing draws) at the
release's global batch (1024 images per step on one device) unless it names its own; where 1024 does not fit, the
largest power of two below it that does, stated in the row's status. A row gives the compile seconds (the first
step's time less a measured step's; an earlier variant that compiled the same graph leaves inductor's cache warm),
ms per step (median over rounds), images/s with a 95% t-interval over rounds, peak memory, and the achieved TFLOP/s
(3 x the counted forward FLOPs per image) with its fraction of the device's dense bf16 peak.

The variants run cheapest first (those that reuse an earlier variant's compiled graph early, the autotuning modes
last) in one worker process, so that a variant that kills its process (a CUDA fault) costs only itself, and so that
the budget is a wall-clock limit: when it is spent the worker is stopped, the variant under way is a row with
status ``stopped: budget`` and those not started are rows with ``not run: budget``. A variant that fails (out of
memory, a compile error) is a row with its error and the next one runs.

    python -m transmix.tools.peak OUT.csv                 on a CUDA device: DeiT-S, bf16, the variants below
    python -m transmix.tools.peak OUT.csv --budget 900    every variant, autotuning included
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transmix.config.run import TrainConfig

GLOBAL_BATCH = 1024  # the release's: 8 GPUs x 128 images
BUDGET_S = 150.0  # what the prepared GPU check gives this table: the whole check must stay within 8 minutes
SMALLEST_BATCH = 16  # halving the global batch stops here
CUDA_GRAPHS = ("reduce-overhead", "max-autotune")  # the compile modes that replay CUDA graphs
MARK = "transmix-peak "  # the worker's result lines on stdout start with this; anything else there is not ours


@dataclass(frozen=True)
class Variant:
    """One way of running the step.

    Attributes:
        name: what the row is called.
        compile_mode: ``torch.compile``'s ``mode`` (``default`` for its default), or None for eager.
        fused: AdamW's fused one-kernel step; False is torch's foreach implementation, its default on CUDA.
        batch: images per step; None: the global batch, or the largest power of two below it that fits.
        fast_norm: timm's fast LayerNorm (apex's fused kernel where apex is installed, else the norm in bf16).
    """

    name: str
    compile_mode: str | None
    fused: bool = True
    batch: int | None = None
    fast_norm: bool = False


GPU_VARIANTS = (
    Variant("compile default, fused AdamW", "default", batch=256),  # the bench's compiled deit, in inductor's cache
    Variant("compile default, fused AdamW", "default"),
    Variant("compile default, foreach AdamW", "default", fused=False),  # the graph of the row above
    Variant("compile reduce-overhead (CUDA graphs)", "reduce-overhead"),
    Variant("compile default, fused AdamW", "default", batch=512),
    Variant("compile default, timm fast_norm", "default", fast_norm=True),
    Variant("compile max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs"),
    Variant("compile max-autotune (CUDA graphs)", "max-autotune"),  # the autotuning of the row above is cached
)
CPU_VARIANTS = (  # the code path at toy size: eager, as the CPU bench runs
    Variant("eager, foreach AdamW", None, fused=False, batch=8),
    Variant("eager, fused AdamW", None),
)


@dataclass(frozen=True)
class PeakRow:
    """One variant, as a row of the CSV; the figures are NaN where it did not run."""

    variant: str
    batch_size: int
    status: str  # "ok", "ok (...)", "error: ...", "stopped: budget", "not run: budget"
    compile_s: float
    ms_per_step: float  # median over rounds
    images_per_second: float  # mean over rounds
    low: float  # 95% t-interval over rounds
    high: float
    peak_memory_mb: float
    achieved_tflops: float  # 3 x forward FLOPs per image x images/s, at the median step
    peak_fraction: float  # of the device's dense bf16 peak (NaN where unknown)
    rounds: int
    device: str
    torch: str


def peak(cfg: TrainConfig, variants: tuple[Variant, ...] = GPU_VARIANTS, budget_s: float = BUDGET_S,
         global_batch: int = GLOBAL_BATCH, in_chans: int = 3, img_size: int = 224, num_classes: int = 1000,
         steps: int = 5, rounds: int = 5, warmup: int = 2) -> list[PeakRow]:  # fmt: skip
    """A row per variant, in the order given, within ``budget_s`` seconds of wall-clock time.

    Args:
        cfg: the step's config (model, precision, device, tf32, seed); each variant sets its batch and optimizer.
        steps: batches per round; ``warmup`` rounds (compilation and CUDA-graph recording) precede ``rounds``.
    """
    deadline = time.monotonic() + budget_s
    _free()  # what this process's allocator still holds of the device is the worker's
    spec = {"cfg": cfg.to_dict(), "global_batch": global_batch, "in_chans": in_chans, "img_size": img_size,
            "num_classes": num_classes, "steps": steps, "rounds": rounds, "warmup": warmup}  # fmt: skip
    rows: dict[int, PeakRow] = {}
    pending = list(range(len(variants)))
    while pending and time.monotonic() < deadline:
        fitted = next((r.batch_size for i, r in sorted(rows.items()) if variants[i].batch is None and _ran(r)), None)
        work = {**spec, "fitted": fitted, "variants": {i: asdict(variants[i]) for i in pending}}
        rows.update(_run_worker(work, deadline, cfg, variants))
        pending = [i for i in pending if i not in rows]
    for i in pending:
        rows[i] = _not_run(variants[i], cfg, "not run: budget", rounds, global_batch)
    return [rows[i] for i in range(len(variants))]


def _run_worker(work: dict[str, Any], deadline: float, cfg: TrainConfig,
                variants: tuple[Variant, ...]) -> dict[int, PeakRow]:  # fmt: skip
    """Rows of the variants one worker finished before it ended or the deadline came; the variant it was running
    when it was stopped or died is a row too, the rest are left for another worker."""
    rows: dict[int, PeakRow] = {}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "transmix.tools.peak", "--worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(work))
        proc.stdin.close()
        lines: queue.Queue[str | None] = queue.Queue()
        batch = work["fitted"] or work["global_batch"]  # what a variant of the global batch would run at
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        current = None
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                os.killpg(proc.pid, signal.SIGKILL)  # the worker and the compile workers it started
                proc.wait()
                if current is not None:
                    rows[current] = _not_run(variants[current], cfg, "stopped: budget", work["rounds"], batch)
                return rows
            if line is None:
                break
            if not line.startswith(MARK):
                continue
            message = json.loads(line[len(MARK) :])
            if "start" in message:
                current = int(message["start"])
            else:
                rows[int(message["index"])] = PeakRow(**message["row"])
                current = None
        code = proc.wait()
        err.seek(0)
        last = next((ln for ln in reversed(err.read().splitlines()) if ln.strip()), "")
        if current is not None:  # the worker died inside a variant
            rows[current] = _not_run(variants[current], cfg, f"error: worker exited with {code}: {last}"[:300],
                                     work["rounds"], batch)  # fmt: skip
        elif not rows:  # it ended before its first variant: another worker would too
            for i in work["variants"]:
                rows[int(i)] = _not_run(variants[int(i)], cfg, f"error: worker exited with {code}: {last}"[:300],
                                        work["rounds"], batch)  # fmt: skip
    return rows


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _ran(row: PeakRow) -> bool:
    return row.status.startswith("ok")


def _not_run(variant: Variant, cfg: TrainConfig, status: str, rounds: int, global_batch: int) -> PeakRow:
    """The row of a variant that gave no figures: the batch it would have run at, and why it did not."""
    import torch

    nan = float("nan")
    return PeakRow(variant.name, variant.batch or global_batch, status, nan, nan, nan, nan, nan, nan, nan, nan, rounds,
                   _device_name(cfg.device), str(torch.__version__))  # fmt: skip


def _device_name(device: str) -> str:
    from transmix.training.runtime import device_name, resolve_device

    return device_name(resolve_device(device))


def _worker() -> int:
    """The worker's side: the variants of the spec on stdin, a line when each starts and one with its row."""
    from transmix.config.run import from_dict
    from transmix.tools.cost import forward_flops

    work = json.loads(sys.stdin.read())
    cfg = from_dict(work["cfg"])
    flops, _ = forward_flops(cfg.model, work["img_size"], work["in_chans"], work["num_classes"])
    fitted = work["fitted"]
    for index, fields_ in work["variants"].items():
        variant = Variant(**fields_)
        _emit({"start": index})
        row = run_variant(cfg, variant, flops, fitted or work["global_batch"], fitted is None, work)
        if variant.batch is None and _ran(row):
            fitted = row.batch_size
        _emit({"index": index, "row": asdict(row)})
    return 0


def _emit(message: dict[str, Any]) -> None:
    print(MARK + json.dumps(message), flush=True)


def run_variant(cfg: TrainConfig, variant: Variant, flops: float, global_batch: int, may_halve: bool,
                work: dict[str, Any]) -> PeakRow:  # fmt: skip
    """One variant's row; on running out of memory at the global batch (``may_halve``), the same at half of it,
    down to :data:`SMALLEST_BATCH`."""
    import torch

    batch = variant.batch or global_batch
    notes = []
    while True:
        try:
            row = _time_variant(cfg, variant, batch, flops, work)
        except torch.OutOfMemoryError as err:
            _free()
            if variant.batch is None and may_halve and batch // 2 >= SMALLEST_BATCH:
                notes.append(f"{batch} did not fit")
                batch //= 2
                continue
            return _failed(variant, cfg, batch, err, work["rounds"])
        except Exception as err:  # noqa: BLE001 - a failed variant is a row, and the next one still runs
            _free()
            return _failed(variant, cfg, batch, err, work["rounds"])
        _free()
        if variant.fast_norm:
            from timm.layers import fast_norm

            notes.append("apex's fused kernel" if fast_norm.has_apex else "no apex: the norm in bf16, not fused")
        return row if not notes else PeakRow(**{**asdict(row), "status": f"ok ({'; '.join(notes)})"})


def _time_variant(cfg: TrainConfig, variant: Variant, batch: int, flops: float, work: dict[str, Any]) -> PeakRow:
    import statistics

    import torch

    from transmix.reporting.stats import t_interval
    from transmix.tools import bench

    run_cfg = cfg.replace(batch_size=batch, fused=variant.fused)
    with _fast_norm(variant.fast_norm):
        device, base, batches = bench.setup(run_cfg, work["steps"], work["in_chans"], work["img_size"],
                                            work["num_classes"])  # fmt: skip
    if variant.fast_norm and not any(getattr(m, "_fast_norm", False) for m in base.modules()):
        raise ValueError(f"{cfg.model} has no timm LayerNorm that fast_norm switches")
    (stepper,) = bench.steppers(run_cfg, base, work["num_classes"], work["img_size"], device,
                                compiled=variant.compile_mode is not None, columns=("deit",),
                                compile_mode=variant.compile_mode).values()  # fmt: skip
    if variant.compile_mode in CUDA_GRAPHS:
        stepper = _new_step_for_cuda_graphs(stepper)
    gen = torch.Generator().manual_seed(cfg.seed)
    bench.sync(device)
    started = time.perf_counter()
    stepper(*batches[0], gen)  # compilation happens here
    bench.sync(device)
    first = time.perf_counter() - started
    times, memory = bench.measure({"deit": stepper}, batches, work["rounds"], work["warmup"], device, cfg.seed)
    seconds = times["deit"]
    ms = statistics.median(seconds) * 1e3
    speed = t_interval([batch / s for s in seconds])
    tflops = 3 * flops * batch / (ms / 1e3) / 1e12
    peak_tflops = bench.device_peak_tflops(device)
    return PeakRow(variant.name, batch, "ok", max(first - ms / 1e3, 0.0), ms, float(speed["mean"]),
                   float(speed["low"]), float(speed["high"]), memory["deit"], tflops,
                   tflops / peak_tflops if peak_tflops else float("nan"), work["rounds"],
                   _device_name(str(device)), str(torch.__version__))  # fmt: skip


def _new_step_for_cuda_graphs(stepper: Any) -> Any:
    """The step, telling CUDA graphs first that a new iteration begins: the outputs of the last one may then be
    overwritten (torch's advice for training loops under ``reduce-overhead``)."""
    import torch

    def step(x: Any, y: Any, gen: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        return stepper(x, y, gen)

    return step


@contextlib.contextmanager
def _fast_norm(on: bool) -> Iterator[None]:
    """timm's fast LayerNorm for the models built inside (each LayerNorm reads the switch when it is built)."""
    from timm.layers import is_fast_norm, set_fast_norm

    before = is_fast_norm()
    set_fast_norm(on)
    try:
        yield
    finally:
        set_fast_norm(before)


def _free() -> None:
    """Collect what a variant left, and forget its compiled graphs: the next one is compiled for itself."""
    import gc

    if "torch" not in sys.modules:
        return
    import torch

    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _failed(variant: Variant, cfg: TrainConfig, batch: int, err: BaseException, rounds: int) -> PeakRow:
    first = (str(err).strip().splitlines() or [""])[0]
    return _not_run(variant, cfg, f"error: {type(err).__name__}: {first}"[:300], rounds, batch)


def format_table(rows: list[PeakRow]) -> str:
    """The rows as a plain table, for a terminal."""
    lines = [f"{'variant':40}{'batch':>6}{'compile s':>10}{'ms/step':>9}{'images/s [95% CI]':>24}{'TFLOP/s':>9}"
             f"{'of peak':>8}  status"]  # fmt: skip
    for r in rows:
        figures = (f"{r.compile_s:10.1f}{r.ms_per_step:9.2f}{_interval(r):>24}{r.achieved_tflops:9.1f}"
                   f"{'-' if math.isnan(r.peak_fraction) else f'{r.peak_fraction:.1%}':>8}")  # fmt: skip
        lines.append(f"{r.variant:40}{r.batch_size or '':>6}{figures if _ran(r) else '':60}  {r.status}")
    return "\n".join(lines)


def _interval(r: PeakRow) -> str:
    return f"{r.images_per_second:.0f} [{r.low:.0f}, {r.high:.0f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transmix.tools.peak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("out", type=Path, nargs="?", help="write the rows to this CSV")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds of wall-clock time (%(default)s)")
    parser.add_argument("--cpu", action="store_true", help="the toy variants on the micro model, on the CPU")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker()
    from transmix.config.run import load
    from transmix.tools.bench import write_csv

    if args.cpu:
        cfg = load(None, ["model=vit_micro_patch4_28", "device=cpu"])
        rows = peak(cfg, CPU_VARIANTS, args.budget, 16, in_chans=1, img_size=28, num_classes=10, steps=2, rounds=3,
                    warmup=1)  # fmt: skip
    else:
        cfg = load(None, ["model=deit_small_patch16_224", "device=cuda", "precision=bf16", "tf32=true"])
        rows = peak(cfg, GPU_VARIANTS, args.budget)
    print(format_table(rows))
    if args.out:
        print(f"wrote {write_csv(rows, args.out, append=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
