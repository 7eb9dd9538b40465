"""The prepared GPU check: every GPU path of the package, in one unattended run that leaves its results in one folder.

    python -m transmix.tools.gpu_check OUTDIR          on a machine with a CUDA device (see below for how long)
    python -m transmix.tools.gpu_check OUTDIR --cpu    the same steps at toy size on the CPU (the tests run this)

Run it from the source tree (``PYTHONPATH=.``; the tests of step 2 live in ``tests/``). It needs torch, timm, numpy,
PyYAML, pandas and scipy (for the intervals), pytest, and nothing from the network: the training data is generated.
It stays in the package, beside the benchmarks it calls, because seven of its eight steps are the package's own
bench, profile, loaders and trainer on a bare GPU machine; only step 2 reaches into ``tests/``, and without a source
tree beside it that step fails with a line saying so while the others still run.
Steps, in this order, each recorded in ``OUTDIR/summary.json`` whether or not the others pass (twelve files in all,
with ``tests.log``, ``bench.txt`` and ``train.log``; generated images and checkpoints go to a temporary folder):

1. ``environment.json``: versions, the device, its driver;
2. the device-path tests (:data:`DEVICE_TESTS`, their CUDA variants): resume bit-exact with CUDA's RNG, bf16
   attention weights, torch.compile with the capture, the NCCL reduction, a TransMix step that waits for the device
   no more often than deit's, and the device input path against the PIL path (nvJPEG, the RandAugment ops);
3. ``bench.csv``: DeiT-S at 224 px, batch 256, bf16, eager and compiled, fused AdamW and TF32: transmix/deit,
   explicit/deit and timm's parts/ours with intervals, images/s, memory, the fraction of the bf16 peak;
4. ``profile.csv``: the same model and batch, eager, the deit and transmix steps under ``torch.profiler``, the 15
   operators whose CUDA self time per step differs most between them (:mod:`transmix.tools.profile_step`);
5. ``loader.csv``: each input path alone (``loader: pil`` and ``loader: device``) on generated ImageNet-sized JPEGs
   (RandAugment, batches finished on the GPU), images/s by number of workers: the rate it can feed a step at;
6. ``fed.csv``: the compiled DeiT-S step trained through each input path with 15 workers, against the same step on
   batches already on the GPU, in the same process (:mod:`transmix.tools.fed_bench`); the aim is 95% of the latter;
7. ``train.json``: a short real training of DeiT-T on generated 224 px class folders that must lower its loss, is
   stopped by SIGTERM inside an epoch and resumed, and must continue at the step it saved;
8. ``peak.csv``: the compiled deit step at the release's global batch (1024) under each known speed-up (compile
   modes with and without CUDA graphs, fused or foreach AdamW, batch 256/512/1024, timm's fast LayerNorm): images/s
   with intervals, compile time, the fraction of the bf16 peak (:mod:`transmix.tools.peak`). It runs last and gets
   what is left of :data:`TOTAL_S` (at most its own 150 s, at least :data:`PEAK_MIN_S`); variants left out are
   written as ``not run: budget``, and ``python -m transmix.tools.peak OUT.csv --budget 900`` runs them all.

Time on one H200, before steps 4 to 6 and 8 were added: 4 min 20 s for the rest (with 20 training epochs and the
loader at 4 worker counts; now 12 epochs and 2 counts per path). The new steps have not yet run on a GPU; the time
guard on step 8 is there so that the whole call stays within 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

# step 2, relative to the source tree the check runs from: the trainer's device paths and the device input path
DEVICE_TESTS = ("tests/integration/test_device_paths.py", "tests/integration/test_device_loader.py",
                "tests/unit/test_tensor_aug.py")  # fmt: skip
TOTAL_S = 450.0  # the whole check's time on one GPU; the peak table, run last, gets what is left of it (at most its
PEAK_MIN_S = 45.0  # own budget, at least this), so that one call stays within 8 minutes with start-up and copying
SIZES = {  # what each step runs, on a GPU and on the CPU
    "gpu": dict(
        bench_model="deit_small_patch16_224", bench_size=224, bench_chans=3, bench_classes=1000, bench_batch=256,
        bench_modes="eager,compiled", bench_precision="bf16", bench_steps=10, bench_rounds=5,
        profile_steps=5, profile_warmup=3, peak_global_batch=1024, peak_steps=5, peak_rounds=5, peak_warmup=2,
        train_model="deit_tiny_patch16_224", train_size=224, classes=4, per_class=(256, 32), batch=64, epochs=12,
        sync_every=8, precision="bf16", workers=8, loader_workers=[4, 15], loader_batch=64, loader_batches=20,
        fed_workers=15, fed_steps=10, fed_rounds=3,
    ),
    "cpu": dict(
        bench_model="vit_micro_patch4_28", bench_size=28, bench_chans=1, bench_classes=10, bench_batch=16,
        bench_modes="eager", bench_precision="fp32", bench_steps=2, bench_rounds=3,
        profile_steps=5, profile_warmup=1, peak_global_batch=16, peak_steps=2, peak_rounds=3, peak_warmup=1,
        train_model="vit_micro_patch4_28", train_size=32, classes=3, per_class=(32, 8), batch=8, epochs=4,
        sync_every=3, precision="fp32", workers=1, loader_workers=[0, 1], loader_batch=4, loader_batches=2,
        fed_workers=1, fed_steps=2, fed_rounds=2,
    ),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transmix.tools.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("out", type=Path, help="folder for every result (made if missing)")
    parser.add_argument("--cpu", action="store_true", help="toy sizes on the CPU, to check the check itself")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: print the results already in OUT as the README's markdown")  # fmt: skip
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.out), end="")
        return 0
    mode = "cpu" if args.cpu else "gpu"
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"mode": mode}
    steps = [("environment", environment), ("tests", tests), ("bench", bench), ("profile", profile),
             ("loader", loader), ("fed", fed), ("train", train_check), ("peak", peak)]  # fmt: skip
    began = time.perf_counter()
    for name, step in steps:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            if step is peak:  # last: it gets the time the check has left
                result = peak(out, mode, TOTAL_S - (started - began))
            else:
                result = step(out, mode)
        except Exception as err:  # noqa: BLE001 - a failed step is recorded and the next one still runs
            (out / f"{name}.error.txt").write_text(traceback.format_exc())
            result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        result["seconds"] = round(time.perf_counter() - started, 1)
        summary[name] = result
        print(json.dumps({name: result}, indent=1, default=str), flush=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    ok = all(summary[name].get("ok", False) for name, _ in steps)
    print(f"== {'passed' if ok else 'FAILED'}: {out / 'summary.json'}", flush=True)
    return 0 if ok else 1


def environment(out: Path, mode: str) -> dict[str, Any]:
    import timm
    import torch

    from transmix.records.provenance import git_sha

    env = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
           "cuda": torch.version.cuda, "git_sha": git_sha(), "cpus": os.cpu_count()}  # fmt: skip
    if mode == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device: run with --cpu to check the check itself")
        env["device"] = torch.cuda.get_device_name(0)
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"]
        smi = subprocess.run(query, capture_output=True, text=True)
        env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    else:
        env["device"] = platform.processor() or "cpu"
    (out / "environment.json").write_text(json.dumps(env, indent=1))
    return {"ok": True, **env}


def tests(out: Path, mode: str) -> dict[str, Any]:
    """The device-path tests: their CUDA variants on a GPU, their CPU variants in --cpu mode."""
    # --cpu: two quick CPU variants, enough to keep this step working (the test suite runs all of them)
    marker = ["-m", "gpu"] if mode == "gpu" else ["-k", "cpu and (bf16 or reduction)"]
    missing = [path for path in DEVICE_TESTS if not Path(path).is_file()]
    if missing:
        return {"ok": False, "result": f"{', '.join(missing)} not here: run the check from the source tree"}
    command = [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-q", "-rA", *marker,
               *DEVICE_TESTS]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    (out / "tests.log").write_text(result.stdout + result.stderr)
    last = (result.stdout.strip().splitlines() or [""])[-1]
    return {"ok": result.returncode == 0 and "passed" in last and "failed" not in last, "result": last}


def _bench_config(mode: str) -> Any:
    """The step the bench, the profile and the peak table time: DeiT-S at batch 256 with fused AdamW and TF32 on a
    GPU, the micro ViT on the CPU."""
    from transmix.config.run import load

    size = SIZES[mode]
    device = "cuda" if mode == "gpu" else "cpu"
    extra = ["fused=true", "tf32=true"] if mode == "gpu" else []
    return load(None, [f"model={size['bench_model']}", f"batch_size={size['bench_batch']}", f"device={device}",
                       f"precision={size['bench_precision']}", *extra])  # fmt: skip


def bench(out: Path, mode: str) -> dict[str, Any]:
    """Our step against deit, the release's explicit attention and timm's parts; the rows go to bench.csv."""
    from transmix.tools import bench as bench_mod

    size = SIZES[mode]
    cfg = _bench_config(mode)
    peak = bench_mod.device_peak_tflops(bench_mod.resolve_device(cfg.device))
    rows = bench_mod.bench(cfg, steps=size["bench_steps"], rounds=size["bench_rounds"], warmup=2,
                           in_chans=size["bench_chans"], img_size=size["bench_size"], num_classes=size["bench_classes"],
                           modes=tuple(size["bench_modes"].split(",")), precisions=(size["bench_precision"],),
                           peak_tflops=peak)  # fmt: skip
    bench_mod.write_csv(rows, out / "bench.csv")
    (out / "bench.txt").write_text(bench_mod.format_table(rows) + "\n")
    figures = {f"{r.mode}/{r.column}": {"ms": round(r.ms_per_step, 2), "img_s": round(r.images_per_second),
                                        "vs_deit": [round(v, 3) for v in (r.vs_deit, r.vs_deit_low, r.vs_deit_high)],
                                        "timm_over_ours": round(r.speedup_vs_timm, 3),
                                        "peak_fraction": round(r.peak_fraction, 3)} for r in rows}  # fmt: skip
    return {"ok": True, "peak_tflops": peak, "rows": figures}


def profile(out: Path, mode: str) -> dict[str, Any]:
    """The bench's deit and transmix steps (eager) under the profiler: the operators that differ most go to
    profile.csv."""
    from transmix.tools import profile_step

    size = SIZES[mode]
    rows, summary = profile_step.profile(_bench_config(mode), steps=size["profile_steps"],
                                         warmup=size["profile_warmup"], in_chans=size["bench_chans"],
                                         img_size=size["bench_size"], num_classes=size["bench_classes"])  # fmt: skip
    profile_step.write_csv(rows, out / "profile.csv")
    summary["more_calls_in_transmix"] = summary["more_calls_in_transmix"][:10]
    return {"ok": bool(rows), **summary}


def peak(out: Path, mode: str, left_s: float = math.inf) -> dict[str, Any]:
    """The compiled deit step under each known speed-up, within the table's own budget or the ``left_s`` seconds
    the check has left (at least :data:`PEAK_MIN_S`); the rows go to peak.csv."""
    from transmix.tools import bench as bench_mod
    from transmix.tools import peak as peak_mod

    size = SIZES[mode]
    variants = peak_mod.GPU_VARIANTS if mode == "gpu" else peak_mod.CPU_VARIANTS
    budget_s = min(peak_mod.BUDGET_S, max(PEAK_MIN_S, left_s))
    rows = peak_mod.peak(_bench_config(mode), variants, budget_s, size["peak_global_batch"],
                         in_chans=size["bench_chans"], img_size=size["bench_size"], num_classes=size["bench_classes"],
                         steps=size["peak_steps"], rounds=size["peak_rounds"], warmup=size["peak_warmup"])  # fmt: skip
    bench_mod.write_csv(rows, out / "peak.csv", append=False)
    ran = [r for r in rows if r.status.startswith("ok")]
    figures = {f"{r.variant}, batch {r.batch_size}": [round(r.images_per_second), round(r.peak_fraction, 3)]
               for r in ran}  # fmt: skip
    return {"ok": bool(ran), "images_per_second_and_peak_fraction": figures,
            "not_ok": {f"{r.variant}, batch {r.batch_size}": r.status for r in rows
                       if not r.status.startswith("ok")}}  # fmt: skip


def loader(out: Path, mode: str) -> dict[str, Any]:
    """The class-folder loader alone (RandAugment, uint8 batches finished on the device) through each input path
    (``loader: pil`` and ``loader: device``) by number of workers: the images/s a run on this machine can be fed
    at; the rows go to loader.csv."""
    from transmix.config.run import load
    from transmix.data.synthetic import make_class_folders
    from transmix.tools import bench as bench_mod
    from transmix.tools import loader_bench

    size = SIZES[mode]
    side = 224 if mode == "gpu" else 32
    cfg = load(None, ["dataset=imagefolder", f"img_size={side}", f"batch_size={size['loader_batch']}",
                      "aa=rand-m9-mstd0.5-inc1", f"device={'cuda' if mode == 'gpu' else 'cpu'}"])  # fmt: skip
    workers, batches, rounds = size["loader_workers"], size["loader_batches"], 3
    with tempfile.TemporaryDirectory(prefix="transmix-gpu-check-") as tmp:
        if mode == "gpu":
            tree = loader_bench.generated_tree(Path(tmp), loader_bench.images_needed(cfg, workers, batches, rounds))
        else:
            tree = make_class_folders(tmp, 2, (24, 1), 40, suffix=".jpg")
        rows = [row for path in ("pil", "device")
                for row in loader_bench.bench_loader(cfg.replace(data_dir=str(tree), loader=path), workers, batches,
                                                     rounds)]  # fmt: skip
    bench_mod.write_csv(rows, out / "loader.csv")
    return {"ok": True, "images_per_second": {f"{r.loader}/{r.workers}": [round(v) for v in (r.images_per_second,
                                                                                             r.low, r.high)]
                                              for r in rows}}  # fmt: skip


def fed(out: Path, mode: str) -> dict[str, Any]:
    """The compiled deit step (DeiT-S, batch 256, bf16) trained from generated 224 px JPEG folders through each
    input path, against the same step on batches already on the device; the rows go to fed.csv. ``ok`` when every
    source ran; whether a path keeps the step fed (the aim: 95% of the synthetic images/s) is in the rows."""
    from transmix.data.synthetic import make_class_folders
    from transmix.tools import bench as bench_mod
    from transmix.tools import fed_bench, loader_bench

    size = SIZES[mode]
    workers, steps, rounds = size["fed_workers"], size["fed_steps"], size["fed_rounds"]
    base = _bench_config(mode).replace(compile=mode == "gpu")
    side = 224 if mode == "gpu" else 32
    cfg = base.replace(dataset="imagefolder", img_size=side, aa="rand-m9-mstd0.5-inc1",
                       model=base.model if mode == "gpu" else "vit_micro_patch4_28")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="transmix-gpu-check-") as tmp:
        if mode == "gpu":
            tree = loader_bench.generated_tree(Path(tmp), fed_bench.images_needed(cfg, workers, steps, rounds))
        else:
            tree = make_class_folders(tmp, 2, (48, 1), (40, 36), suffix=".jpg")
        rows = fed_bench.bench_fed(cfg.replace(data_dir=str(tree)), ("pil", "device"), workers, steps, rounds)
    bench_mod.write_csv(rows, out / "fed.csv", append=False)
    figures = {
        r.source: [
            round(r.images_per_second),
            [round(v, 3) for v in (r.vs_synthetic, r.vs_synthetic_low, r.vs_synthetic_high)],
        ]
        for r in rows
    }
    return {"ok": len(rows) == 3, "images_per_second_and_vs_synthetic": figures}


def train_check(out: Path, mode: str) -> dict[str, Any]:
    """Train on generated class folders, stop it with SIGTERM inside an epoch, resume it; the loss must fall."""
    from transmix.data.synthetic import make_class_folders

    size = SIZES[mode]
    work = Path(tempfile.mkdtemp(prefix="transmix-gpu-check-"))  # images and checkpoints stay out of OUTDIR
    data = make_class_folders(work / "data", size["classes"], size["per_class"], size["train_size"])
    run = work / "run"
    first_log = work / "first.log"
    steps = size["classes"] * size["per_class"][0] // size["batch"]
    sets = {"dataset": "imagefolder", "data_dir": data, "model": size["train_model"], "img_size": size["train_size"],
            "epochs": size["epochs"], "batch_size": size["batch"], "warmup_epochs": 1, "lr": 1e-3, "method": "transmix",
            "switch_prob": 0.8, "ema_decay": 0.99, "num_workers": size["workers"], "sync_every": size["sync_every"],
            "precision": size["precision"], "device": "cuda" if mode == "gpu" else "cpu"}  # fmt: skip
    if mode == "gpu":
        sets.update(fused=True, tf32=True)
    command = [sys.executable, "-m", "transmix.cli", "train", "--out", str(run), "--progress", "log",
               *(a for key, value in sets.items() for a in ("--set", f"{key}={value}"))]  # fmt: skip
    stop_at = f"epoch {size['epochs'] // 2}/{size['epochs']} step"
    with first_log.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while stop_at not in first_log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # waiting for the log line, not for a fixed time
        os.killpg(proc.pid, signal.SIGTERM)  # the trainer and its loader workers, as SLURM signals a job
        first = proc.wait(timeout=300)
    second = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    (out / "train.log").write_text(f"{first_log.read_text()}\n== resumed\n{second.stdout}{second.stderr}")
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    stopped = _stopped_at(first_log.read_text())
    resumed = re.search(r"resuming \S+ at epoch (\d+), step (\d+)", second.stderr)
    losses = [round(h["train_loss"], 4) for h in history]
    result = {"first_exit": first, "second_exit": second.returncode, "steps_per_epoch": steps,
              "stopped_at": stopped, "resumed_at": list(resumed.groups()) if resumed else None,
              "train_loss": losses, "val_top1": [h["val_top1"] for h in history],
              "images_per_second": [round(h["images_per_second"]) for h in history]}  # fmt: skip
    result["ok"] = (first == 143 and second.returncode == 0 and stopped is not None and result["stopped_at"] ==
                    result["resumed_at"] and len(history) == size["epochs"] and losses[-1] < losses[0])  # fmt: skip
    (out / "train.json").write_text(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return result


def report(folder: Path) -> str:
    """A results folder of this check as markdown: what ran where, the bench table, the loader and the training."""
    import csv

    summary = json.loads((folder / "summary.json").read_text())
    env = summary["environment"]
    lines = [f"{env['device']} ({env.get('nvidia_smi', '')}), torch {env['torch']}, timm {env['timm']}, "
             f"revision {env['git_sha'][:7]}: device-path tests {summary['tests']['result']}.", "",
             "| mode | column | ms/step | images/s | vs deit [95% CI] | timm/this [95% CI] | peak MB | TFLOP/s | "
             "of bf16 peak |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in csv.DictReader((folder / "bench.csv").open()):
        f = {k: float(v) for k, v in r.items() if k.startswith(("vs_", "speedup", "ms_", "images", "peak", "ach"))}
        lines.append(f"| {r['mode']} {r['precision']} | {r['column']} | {f['ms_per_step']:.2f} | "
                     f"{f['images_per_second']:.0f} | {f['vs_deit']:.3f} [{f['vs_deit_low']:.3f}, "
                     f"{f['vs_deit_high']:.3f}] | {f['speedup_vs_timm']:.3f} [{f['speedup_vs_timm_low']:.3f}, "
                     f"{f['speedup_vs_timm_high']:.3f}] | {f['peak_memory_mb']:.0f} | {f['achieved_tflops']:.1f} | "
                     f"{f['peak_fraction']:.1%} |")  # fmt: skip
    lines += _profile_table(folder / "profile.csv") + _peak_table(folder / "peak.csv")
    by_path: dict[str, list[str]] = {}
    for r in csv.DictReader((folder / "loader.csv").open()):
        by_path.setdefault(r.get("loader") or "pil", []).append(
            f"{r['workers']}: {float(r['images_per_second']):.0f} [{float(r['low']):.0f}, {float(r['high']):.0f}]"
        )
    loader = [f"Loader alone{f' ({path})' if len(by_path) > 1 else ''}, images/s by workers [95% CI]: "
              + "; ".join(rows) + "." for path, rows in by_path.items()]  # fmt: skip
    train = summary["train"]
    speeds = sorted(train["images_per_second"])
    lines += ["", *loader, *_fed_lines(folder / "fed.csv"),
              f"Training ({'passed' if train['ok'] else 'FAILED'}): loss {train['train_loss'][0]} in the first "
              f"epoch, {train['train_loss'][-1]} in the last of {len(train['train_loss'])}; median "
              f"{speeds[len(speeds) // 2]} images/s; SIGTERM exit {train['first_exit']}, stopped at epoch "
              f"{'/step '.join(train['stopped_at'] or ['?'])}, resumed at "
              f"{'/step '.join(train['resumed_at'] or ['none'])}, resumed exit {train['second_exit']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _fed_lines(path: Path) -> list[str]:
    """fed.csv as one markdown line (none for a folder of a check that had no fed step)."""
    import csv

    if not path.is_file():
        return []
    rows = list(csv.DictReader(path.open()))
    if not rows:
        return []
    first = rows[0]
    parts = [f"{r['source']}{'' if r['source'] == 'synthetic' else ' with ' + r['workers'] + ' workers'} "
             f"{float(r['images_per_second']):.0f} [{float(r['low']):.0f}, {float(r['high']):.0f}]"
             + ("" if r["source"] == "synthetic" else f", {float(r['vs_synthetic']):.3f} "
                f"[{float(r['vs_synthetic_low']):.3f}, {float(r['vs_synthetic_high']):.3f}] of synthetic")
             for r in rows]  # fmt: skip
    compiled = "compiled" if first["compiled"] == "True" else "eager"
    return [f"Training fed from JPEG folders ({first['model']}, {compiled}, batch {first['batch_size']}), images/s "
            "[95% CI]: " + "; ".join(parts) + "."]  # fmt: skip


def _profile_table(path: Path) -> list[str]:
    """profile.csv as markdown lines (none for a folder of a check that had no profile step)."""
    import csv

    if not path.is_file():
        return []
    rows = list(csv.DictReader(path.open()))
    if not rows:
        return []
    lines = ["", f"Eager step under the profiler, {rows[0]['device_time']} self time in ms per step over "
             f"{rows[0]['steps']} steps, the {len(rows)} operators that differ most between the deit and transmix "
             "steps:", "", "| op | calls deit | calls transmix | ms deit | ms transmix | difference |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| `{r['op']}` | {r['calls_deit']} | {r['calls_transmix']} | {float(r['self_ms_deit']):.3f} | "
                     f"{float(r['self_ms_transmix']):.3f} | {float(r['difference_ms']):+.3f} |")  # fmt: skip
    return lines


def _peak_table(path: Path) -> list[str]:
    """peak.csv as markdown lines (none for a folder of a check that had no peak step)."""
    import csv
    import math

    if not path.is_file():
        return []
    lines = ["", "The compiled deit step under each speed-up (images/s: mean over rounds [95% CI]):", "",
             "| variant | batch | compile s | ms/step | images/s [95% CI] | TFLOP/s | of bf16 peak | status |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in csv.DictReader(path.open()):
        f = {k: float(r[k]) for k in ("compile_s", "ms_per_step", "images_per_second", "low", "high",
                                      "achieved_tflops", "peak_fraction")}  # fmt: skip
        if math.isnan(f["images_per_second"]):
            lines.append(f"| {r['variant']} | {r['batch_size']} | | | | | | {r['status']} |")
            continue
        fraction = "-" if math.isnan(f["peak_fraction"]) else f"{f['peak_fraction']:.1%}"
        lines.append(f"| {r['variant']} | {r['batch_size']} | {f['compile_s']:.1f} | {f['ms_per_step']:.2f} | "
                     f"{f['images_per_second']:.0f} [{f['low']:.0f}, {f['high']:.0f}] | "
                     f"{f['achieved_tflops']:.1f} | {fraction} | {r['status']} |")  # fmt: skip
    return lines


def _stopped_at(log: str) -> list[str] | None:
    """``[epoch, step]`` (epoch 1-based) where the preempted run will continue, from its message."""
    inside = re.search(r"stopped by SIGTERM at epoch (\d+), step (\d+)", log)
    if inside:
        return list(inside.groups())
    after = re.search(r"stopped by SIGTERM after epoch (\d+)", log)  # the signal came in an epoch's last steps
    return [str(int(after.group(1)) + 1), "0"] if after else None


if __name__ == "__main__":
    sys.exit(main())
