"""The training loop, readable top to bottom: setup, resume, one epoch at a time with its history row, final save.

Every run lives in one directory (:mod:`transmix.training.checkpoint` says what it holds). Starting a run in a directory
that holds a checkpoint of the same config continues it, and the result equals an uninterrupted run; SIGTERM saves
a checkpoint at the next step boundary and raises :class:`~transmix.training.checkpoint.Preempted`.

Under ``torchrun`` with the in-memory dataset every process builds the same global batch (``batch_size`` per
process times the number of processes) and mixes it, then trains on its own slice: N processes compute what one
process would with the global batch. With ``dataset=imagefolder`` each process loads its own shard and mixes its
local batch, as timm and the official code do. The loop is the same for both (the split says which, with
``global_batches``). Only rank 0 writes files.

Optimizer, scheduler, EMA and loss come from timm's factories; one step of any method is
:class:`transmix.training.step.Stepper`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transmix.config.run import TrainConfig
from transmix.data import CorruptImage, Split, TrainSplit, eval_split, train_split
from transmix.errors import Failure
from transmix.method.models import build_model
from transmix.records.provenance import git_sha
from transmix.training import checkpoint, run_folder
from transmix.training.accuracy import top_k
from transmix.training.checkpoint import CHECKPOINT, FINAL, HISTORY, RESOLVED, Checkpoint, Preempted, Progress, StopFlag
from transmix.training.distill import load_teacher
from transmix.training.meter import EpochMeter, epoch_sums
from transmix.training.runtime import Dist, compile_model, environment, init_distributed, leave_distributed, use_tf32
from transmix.training.step import Stepper

log = logging.getLogger(__name__)
EPOCH_LINE = "epoch_line"  # marks the one log record per finished epoch (`transmix train --progress epochs`)


class TrainingError(Failure, RuntimeError):
    """Training cannot go on (a diverged loss, a corrupt image, a run directory of another config)."""


@dataclass
class Run:
    """What the loop works with, made once by :func:`setup`."""

    cfg: TrainConfig
    out: Path
    where: Dist
    device: torch.device
    train_set: TrainSplit
    val_set: Split
    gen: torch.Generator  # mixing draws; in memory also data order and augmentation
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    ema: ModelEmaV3 | None
    stepper: Stepper
    steps_per_epoch: int
    now_sha: str  # the code running now
    started_sha: str  # the code that started the run (a resume under other code is recorded beside it)


def train(cfg: TrainConfig, out_dir: str | Path, stop_after: int | None = None, progress: bool | None = None,
          set_aside: bool = False) -> Path:  # fmt: skip
    """Train (or continue) the run in ``out_dir``; returns the path of ``final.pt``, or of the checkpoint when
    ``stop_after`` epochs of this call ended before the run did.

    Args:
        cfg: the run's config.
        out_dir: the run directory; a checkpoint of the same config there is resumed.
        stop_after: leave after this many epochs of this call (to fit a run into time-limited jobs).
        progress: a progress bar; default: when stderr is a terminal (rank 0 only).
        set_aside: a run of another config in ``out_dir`` is renamed to ``<out_dir>.<its config hash>`` and this
            one starts afresh; without it, that is a :class:`TrainingError`.

    Raises:
        Preempted: SIGTERM arrived; the checkpoint holds the state at a step boundary.
        TrainingError: the loss diverged, an image does not decode, or the directory belongs to another config.
    """
    where, device = init_distributed(cfg.device)
    try:
        if run_folder.finished(Path(out_dir), cfg):  # every process reads the same file, so all return here
            log.info("%s already finished", out_dir)
            return Path(out_dir) / FINAL
        if set_aside and where.is_main:
            run_folder.set_aside_other_config(Path(out_dir), cfg)
        if set_aside and where.world > 1:
            torch.distributed.barrier()  # the other processes read the folder only once it was set aside
        with checkpoint.run_lock(Path(out_dir)) if where.is_main else contextlib.nullcontext():
            run = setup(cfg, Path(out_dir), where, device)
            try:
                return _train(run, resume(run), stop_after, sys.stderr.isatty() if progress is None else progress)
            finally:
                run.train_set.close()  # loader workers stop here, not whenever the garbage collector gets to them
    except CorruptImage as err:  # never skipped: training on a substitute image would be silent data corruption
        kept = Path(out_dir) / CHECKPOINT
        raise TrainingError(
            f"corrupt training image, training stopped: {err}. The last good checkpoint "
            f"({kept if kept.exists() else 'none yet'}) is kept; replace or remove the file "
            f"(`transmix data --check --root {cfg.data_dir}` lists every bad one) and run the same command again"
        ) from None
    finally:
        leave_distributed(where)


def _train(run: Run, progress: Progress, stop_after: int | None, bar: bool) -> Path:
    cfg = run.cfg
    if run.where.is_main:
        checkpoint.atomic_write_text(yaml.safe_dump(resolved(run), sort_keys=False), run.out / RESOLVED)
    if progress.epoch >= cfg.total_epochs:  # and final.pt is not this run's (`train` returned if it was)
        log.info("%s: writing %s from the checkpoint, which holds the finished run", run.out, FINAL)
    run.model.train()
    done_now = 0
    with checkpoint.preemption_flag() as stop_flag:
        while progress.epoch < cfg.total_epochs:
            if stop_after is not None and done_now >= stop_after:
                log.info("stopping after %d epoch(s) as asked; rerun to continue", done_now)
                return run.out / CHECKPOINT
            stopped = train_epoch(run, progress, stop_flag, bar and run.where.is_main)
            end_epoch(run, progress)
            done_now += 1
            if stopped and progress.epoch < cfg.total_epochs:
                raise Preempted(f"stopped by {stop_flag.signal or 'a signal'} after epoch {progress.epoch}; run the "
                                "same command again to continue")  # fmt: skip
    if run.where.is_main:
        sha = run.started_sha if run.started_sha == run.now_sha else f"{run.started_sha}+{run.now_sha}"
        ema = run.ema.module.state_dict() if run.ema is not None else None
        checkpoint.save_final(run.out, cfg.to_dict(), cfg.hash(), sha, progress.epoch, run.model.state_dict(), ema)
    return run.out / FINAL


def setup(cfg: TrainConfig, out: Path, where: Dist, device: torch.device) -> Run:
    """Data, model, optimizer, scheduler, EMA and the step, all seeded from ``cfg.seed``."""
    if where.is_main:
        out.mkdir(parents=True, exist_ok=True)
    use_tf32(device, cfg.tf32)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_set, val_set = train_split(cfg, where.part, gen, device), eval_split(cfg)
    steps_per_epoch = len(train_set) // where.world // cfg.batch_size  # = len // global batch; a shard's batches
    if steps_per_epoch == 0:
        raise TrainingError(f"a global batch of {cfg.batch_size * where.world} exceeds the {len(train_set)} "
                            "training images")  # fmt: skip
    torch.manual_seed(cfg.seed)  # weight init and stochastic depth (inside the model)
    model = build_model(cfg, train_set).to(device)
    if cfg.rank_seeds and where.rank > 0:  # the release: process r mixes and drops paths from seed + r (process 0
        gen.manual_seed(cfg.seed + where.rank)  # keeps the streams of a one-process run)
        torch.manual_seed(cfg.seed + where.rank)
    fused = {"fused": True} if cfg.fused else {}  # torch's one-kernel optimizer step, through timm's factory
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs,
                                       warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr,
                                       cooldown_epochs=cfg.cooldown_epochs, step_on_epochs=cfg.sched_on_epochs,
                                       updates_per_epoch=steps_per_epoch)  # fmt: skip
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup) if cfg.ema_decay > 0 else None
    forward = DistributedDataParallel(model) if where.world > 1 else model
    if cfg.compile:  # the attention hooks sit on `model`'s layers, inside what is compiled
        forward = compile_model(forward)
    part = where.part if train_set.global_batches else (0, 1)
    teacher = load_teacher(cfg, val_set, device) if cfg.distillation != "none" else None
    stepper = Stepper(cfg, forward, optimizer, train_set.num_classes, device, train_set.image_shape[-2:], model, part,
                      teacher)  # fmt: skip
    sha = git_sha()
    return Run(cfg, out, where, device, train_set, val_set, gen, model, optimizer, scheduler, ema, stepper,
               steps_per_epoch, sha, sha)  # fmt: skip


def resume(run: Run) -> Progress:
    """Restore the newest checkpoint of ``run.out`` into ``run`` and return its progress (a fresh start without
    one). The checkpoint must come from the same config and number of processes."""
    saved = checkpoint.load(run.out, run.device)
    if saved is None:
        run_folder.check_final(run.out, run.cfg)
        return Progress(sums=epoch_sums())
    diff = run_folder.config_diff(saved.config, run.cfg)
    if diff:
        raise TrainingError(
            f"{run.out / CHECKPOINT} belongs to a run with another config (checkpoint vs now: "
            f"{diff}); use another output directory, or delete the directory to start over"
        )
    if saved.world_size != run.where.world:
        raise TrainingError(f"{run.out} was trained by {saved.world_size} process(es), not {run.where.world}; "
                            "resume with the same number of processes")  # fmt: skip
    run.model.load_state_dict(saved.model)
    run.optimizer.load_state_dict(saved.optimizer)
    run.scheduler.load_state_dict(saved.scheduler)
    if run.ema is not None:
        run.ema.load_state_dict(saved.ema)
    run.train_set.load_state_dict(saved.data)
    checkpoint.restore_rng(saved.rng, run.gen, run.device, run.where.rank)
    run.started_sha = saved.git_sha
    if run.started_sha != run.now_sha:
        log.warning("run started at git %s, continues at %s: final.pt records both", run.started_sha, run.now_sha)
    progress = saved.progress
    progress.sums = {**epoch_sums(), **progress.sums}  # older checkpoints summed fewer things
    if progress.epoch < run.cfg.total_epochs:
        log.info("resuming %s at epoch %d, step %d of %d", run.out, progress.epoch + 1, progress.step,
                 run.steps_per_epoch)  # fmt: skip
    return progress


def train_epoch(run: Run, progress: Progress, stop_flag: StopFlag, bar: bool) -> bool:
    """Train the rest of the epoch under way (all of it unless resumed mid-epoch); returns whether a stop was asked
    at its last step. A stop asked before the last step saves a checkpoint and raises :class:`Preempted`.

    The host waits for the device only every ``sync_every`` steps and at the epoch's end (:meth:`EpochMeter.sync`):
    that is where a non-finite loss is caught, the processes agree on a stop, and progress is shown.
    """
    if progress.step == 0:  # a new epoch (a resumed one keeps its sums, and its split its order)
        progress.sums = epoch_sums()
    t0 = time.perf_counter()
    meter = EpochMeter(progress, run.device)
    show = _progress_bar(run, progress) if bar else None
    log_every, sync_every = max(1, run.steps_per_epoch // 4), run.cfg.sync_every
    stop = False
    for x, y in run.train_set.batches(progress.epoch, progress.step):
        meter.add(run.stepper(x, y, run.gen))
        progress.step += 1
        progress.updates += 1
        run.scheduler.step_update(progress.updates)
        if run.ema is not None:
            run.ema.update(run.model, step=progress.updates)
        if progress.step % sync_every and progress.step < run.steps_per_epoch:
            continue
        steps, loss, stop = meter.sync(stop_flag.asked, run.where.world)
        if not math.isfinite(loss):
            raise TrainingError(_diverged(run, progress, loss, steps))
        if show is not None:
            show.update(steps)
            show.set_postfix(loss=f"{loss:.3f}")
        elif run.where.is_main and progress.step // log_every > (progress.step - steps) // log_every:
            log.info("epoch %d/%d step %d/%d loss %.4f", progress.epoch + 1, run.cfg.total_epochs, progress.step,
                     run.steps_per_epoch, loss)  # fmt: skip
        if stop and progress.step < run.steps_per_epoch:
            progress.sums["seconds"] += time.perf_counter() - t0
            save(run, progress)
            raise Preempted(
                f"stopped by {stop_flag.signal or 'a signal'} at epoch {progress.epoch + 1}, step {progress.step}; "
                f"{run.out / CHECKPOINT} holds this state: run the same command again to continue"
            )
    if show is not None:
        show.close()
    progress.sums["seconds"] += time.perf_counter() - t0
    return stop


def end_epoch(run: Run, progress: Progress) -> None:
    """Close the epoch: its history row (validation top-1 of raw and EMA weights), a checkpoint, the history file."""
    progress.epoch += 1
    if run.where.is_main:
        progress.history.append(history_row(run, progress))
    run.scheduler.step(progress.epoch)  # per-epoch schedules move here (timm's t_in_epochs); per-update ones ignore it
    progress.step = 0
    save(run, progress)
    if run.where.is_main:
        history = "".join(json.dumps(h) + "\n" for h in progress.history)
        checkpoint.atomic_write_text(history, run.out / HISTORY)
        row = progress.history[-1]
        val = "" if row["val_top1"] is None else f" val top-1 {row['val_top1']:.2f}"
        val += f" (EMA {row['val_top1_ema']:.2f})" if row["val_top1_ema"] is not None else ""
        log.info("%s epoch %d/%d loss %.4f%s, %.0f img/s", run.out.name, progress.epoch, run.cfg.total_epochs,
                 row["train_loss"], val, row["images_per_second"], extra={EPOCH_LINE: True})  # fmt: skip


def history_row(run: Run, progress: Progress) -> dict[str, Any]:
    """One line of ``history.jsonl``: the finished epoch's means and its validation top-1 (raw and EMA; empty in
    the epochs that ``val_every`` skips, since on a few hundred images validation can cost more than training)."""
    cfg, sums, n_cut = run.cfg, progress.sums, progress.sums["cutmix"]
    reads_attention = run.stepper.capture is not None and n_cut
    top1 = ema_top1 = None
    if progress.epoch % cfg.val_every == 0 or progress.epoch == cfg.total_epochs:
        top1 = top_k(run.model, run.val_set, run.device, cfg.precision, ks=(1,))[1]
        ema_top1 = top_k(run.ema.module, run.val_set, run.device, cfg.precision, ks=(1,))[1] if run.ema else None
    return {
        "epoch": progress.epoch,
        "train_loss": sums["loss"] / run.steps_per_epoch,
        "lr": run.optimizer.param_groups[0]["lr"],
        "val_top1": top1,
        "val_top1_ema": ema_top1,
        "cutmix_batches": n_cut,
        "lam_area_mean": sums["lam_area"] / n_cut if n_cut else None,
        "lam_label_mean": sums["lam"] / n_cut if n_cut else None,  # label weight on CutMix batches
        # TransMix only: the attention's weight, and how far it lies from the area's per sample
        "lam_attn_mean": sums["lam_attn"] / n_cut if reads_attention else None,
        "lam_gap_mean": sums["lam_gap"] / n_cut if reads_attention else None,
        "train_seconds": sums["seconds"],
        "images_per_second": run.steps_per_epoch * cfg.batch_size * run.where.world / sums["seconds"],
    }


def save(run: Run, progress: Progress) -> None:
    """Write the checkpoint (rank 0; every process calls it, for their random states): the one place a
    :class:`Checkpoint` is made."""
    rng = checkpoint.capture_rng(run.gen, run.device, run.where.world)
    if not run.where.is_main:
        return
    state = Checkpoint(
        config=run.cfg.to_dict(),
        git_sha=run.started_sha,
        world_size=run.where.world,
        progress=progress,
        data=run.train_set.state_dict(),
        model=run.model.state_dict(),
        ema=run.ema.state_dict() if run.ema is not None else None,
        optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(),
        rng=rng,
    )
    checkpoint.save(state, run.out)


def resolved(run: Run) -> dict[str, Any]:
    """``config.resolved.yaml``: the config as used, what it amounts to on this run's processes, and versions."""
    cfg, global_batch = run.cfg, run.cfg.batch_size * run.where.world
    draws = "own draws (seed + rank)" if cfg.rank_seeds else "the same draws"
    mixing = "global batch, sliced per process" if run.train_set.global_batches else f"each process's batch, {draws}"
    return {
        "run_id": run.out.name,
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
        "effective": {
            "lr": cfg.lr,
            "lr_scaling": "none (lr used as given)",
            "world_size": run.where.world,
            "batch_size_per_process": cfg.batch_size,
            "global_batch_size": global_batch,
            "steps_per_epoch": run.steps_per_epoch,
            "mixing": mixing,
            "total_steps": run.steps_per_epoch * cfg.total_epochs,
            "train_images": len(run.train_set),
            "loader_workers": getattr(run.train_set, "num_workers", 0),  # imagefolder: num_workers resolved
            "val_images": len(run.val_set),
            "num_params": sum(p.numel() for p in run.model.parameters()),
            "device": str(run.device),
            "optimizer": type(run.optimizer).__name__,
            "scheduler": type(run.scheduler).__name__,
            "ema": run.ema is not None,
        },
        "environment": environment(run.device, run.now_sha),
    }


def _diverged(run: Run, progress: Progress, loss: float, steps: int) -> str:
    kept = run.out / CHECKPOINT
    where = f"step {progress.step}" if steps == 1 else f"steps {progress.step - steps + 1}-{progress.step}"
    lr = run.optimizer.param_groups[0]["lr"]
    return (
        f"loss is {loss} at epoch {progress.epoch + 1}, {where}: training diverged. The last good checkpoint "
        f"({kept if kept.exists() else 'none yet'}) is kept; the learning rate was {lr:.3g} (lr={run.cfg.lr}, "
        f"min_lr={run.cfg.min_lr}): lower it"
    )


def _progress_bar(run: Run, progress: Progress) -> Any:
    from tqdm import tqdm

    desc = f"epoch {progress.epoch + 1}/{run.cfg.total_epochs}"
    return tqdm(total=run.steps_per_epoch, initial=progress.step, desc=desc, leave=False, dynamic_ncols=True)
