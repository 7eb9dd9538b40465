"""The training loop: one run directory per run, atomic checkpoints, automatic resume, one or many processes.

A run directory holds ``config.resolved.yaml`` (every hyperparameter as used, plus versions and git sha),
``history.jsonl`` (one JSON line per epoch), ``checkpoint.pt`` (everything needed to continue, including every
RNG state; the one before it is kept as ``checkpoint.prev.pt``) and, when training finished, ``final.pt`` (raw
and EMA weights). Starting a run in a directory that holds a checkpoint of the same config continues it; the
result equals an uninterrupted run. SIGTERM (preemption) saves a checkpoint at the next step boundary and exits
with :data:`PREEMPTED_EXIT`, so that the job is retried and resumes mid-epoch.

Under ``torchrun`` with the in-memory dataset every process builds the same global batch (``batch_size`` per
process times the number of processes) and mixes it, then trains on its own slice: N processes compute what one
process would with the global batch. With ``dataset=imagefolder`` each process loads its own shard and mixes its
local batch, as timm and the official code do (see :class:`transmix.data.ImageFolderSplit`). The loop is the same
for both: the dataset object says which (``global_batches``) and hands out each epoch's batches. Only rank 0
writes files.

Optimizer, scheduler, EMA and loss come from timm's factories. The method lives in :mod:`transmix.mixing` and
:mod:`transmix.attention`; this loop only decides per batch whether the label is re-weighted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.distributed as dist
import yaml
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transmix import __version__
from transmix.atomic import atomic_open
from transmix.attention import ClassAttention
from transmix.config import TrainConfig
from transmix.data import CorruptImage, ImageFolderSplit, TensorDataset, load_split
from transmix.mixing import mix_batch, mix_spec, soft_targets, transmix_lam
from transmix.models import create_model
from transmix.results import git_sha

log = logging.getLogger(__name__)

CHECKPOINT, PREVIOUS, FINAL = "checkpoint.pt", "checkpoint.prev.pt", "final.pt"
HISTORY, RESOLVED = "history.jsonl", "config.resolved.yaml"
PREEMPTED_EXIT = 143  # 128 + SIGTERM: the job did not finish and should be run again


class TrainingError(RuntimeError):
    """Training cannot go on (a diverged loss, a run directory of another config); the message says why."""


class Preempted(RuntimeError):  # noqa: N818 - a state, not a fault
    """SIGTERM arrived; a checkpoint was written at a step boundary. Rerunning the same command resumes."""


@dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"device={name} asked for, but no CUDA device is available; use device=cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the ``torchrun`` process group when there is one (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world == 1:
        return Dist(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def atomic_save(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """``torch.save`` atomically; with ``keep_previous`` the file it replaces stays as ``checkpoint.prev.pt``."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
        if keep_previous and path.exists():
            os.replace(path, path.parent / PREVIOUS)


def atomic_write_text(text: str, path: Path) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def load_checkpoint(out: Path, device: torch.device) -> dict[str, Any] | None:
    """The newest checkpoint that loads, or ``None`` in a fresh directory.

    A checkpoint that does not load (truncated by a full disk, a copy cut short) is moved aside as
    ``checkpoint.corrupt.pt`` and the previous one is used, so nothing good is overwritten later.
    """
    for name in (CHECKPOINT, PREVIOUS):
        path = out / name
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises several types for a damaged file
            log.warning("%s does not load (%s); keeping it as checkpoint.corrupt.pt", path, err)
            if name == CHECKPOINT:
                os.replace(path, out / "checkpoint.corrupt.pt")
    if (out / "checkpoint.corrupt.pt").exists():
        raise TrainingError(f"no loadable checkpoint in {out} (see checkpoint.corrupt.pt); delete the directory to "
                            "start over")  # fmt: skip
    return None


@contextmanager
def preemption_flag() -> Iterator[list[bool]]:
    """``flag[0]`` turns true on SIGTERM; the loop checks it at step boundaries. Restores the old handler."""
    flag = [False]

    def handler(signum: int, _frame: Any) -> None:
        log.warning("received signal %d: saving a checkpoint at the next step boundary", signum)
        flag[0] = True

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: no handler, no preemption support
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


Data = TensorDataset | ImageFolderSplit  # what the loop trains and evaluates on; the interface is in transmix.data


def load_data(cfg: TrainConfig) -> tuple[Data, Data]:
    """The training split and the split evaluated (Fashion-MNIST's test split, or ``val/``)."""
    return load_split(cfg, train=True), load_split(cfg, train=False)


def build_model(cfg: TrainConfig, data: Data) -> nn.Module:
    chans, height, _ = data.image_shape
    return create_model(
        cfg.model, num_classes=data.num_classes, in_chans=chans, img_size=height, drop_path=cfg.drop_path
    )


@torch.no_grad()
def top_k(
    model: nn.Module,
    data: Data,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 500,
    ks: tuple[int, ...] = (1, 5),
) -> dict[int, float]:
    """Top-k accuracy in percent."""
    was_training = model.training
    model.eval()
    correct = dict.fromkeys(ks, 0)
    for x, y in data.eval_batches(batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x)
        ranked = logits.float().topk(min(max(ks), logits.shape[1]), dim=1).indices  # top-5 of 3 classes: all
        hits = ranked == y[:, None]
        for k in ks:
            correct[k] += int(hits[:, :k].any(dim=1).sum())
    model.train(was_training)
    return {k: 100.0 * c / len(data) for k, c in correct.items()}


def _epoch_sums() -> dict[str, float]:
    """What an epoch adds up for its history row (kept in mid-epoch checkpoints)."""
    return {"loss": 0.0, "cutmix": 0, "lam_area": 0.0, "lam": 0.0, "lam_attn": 0.0, "lam_gap": 0.0, "seconds": 0.0}


@dataclass
class StepOutput:
    loss: torch.Tensor
    mode: str
    lam_area: float
    lam: torch.Tensor | None  # per-sample label weight used, for re-weighted (TransMix CutMix) batches
    lam_attn: torch.Tensor | None = None  # per-sample attention weight behind ``lam``, same batches


class Stepper:
    """One training step of any method; shared by :func:`train` and ``transmix bench``.

    Args:
        model: what the forward pass calls (possibly wrapped in DDP).
        capture_model: the unwrapped model, where the attention hooks go (default: ``model``).
        part: ``(rank, world)``: this process trains on slice ``rank`` of ``world`` of each mixed batch; ``(0, 1)``
            (all of it) when each process is given its own local batch.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        num_classes: int,
        device: torch.device,
        image_size: tuple[int, int],
        capture_model: nn.Module | None = None,
        part: tuple[int, int] = (0, 1),
    ):
        self.cfg, self.model, self.optimizer, self.device = cfg, model, optimizer, device
        self.num_classes = num_classes
        self.spec = mix_spec(cfg.method, cfg.mixup_alpha, cfg.cutmix_alpha, cfg.switch_prob, cfg.mix_prob)
        self.capture = None
        if cfg.method == "transmix":
            self.capture = ClassAttention(capture_model or model, cfg.attn_block, cfg.attn_blocks, cfg.attn_heads)
        self.image_size = image_size
        self.part = part
        self.loss_fn = SoftTargetCrossEntropy()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> StepOutput:
        mixed = mix_batch(x, y, self.spec, gen)
        images, labels_a, labels_b = (self._mine(t) for t in (mixed.images, mixed.labels_a, mixed.labels_b))
        reweight = self.capture is not None and mixed.mode == "cutmix"
        if self.capture is not None:
            self.capture.enabled = reweight
        with autocast(self.device, self.cfg.precision):
            logits = self.model(images)
        lam: float | torch.Tensor = mixed.lam_area
        lam_attn = None
        if reweight:
            assert mixed.box is not None  # CutMix batches carry their box
            lam_attn = self.capture.lam(mixed.box, self.image_size, self.cfg.box_to_grid)
            lam = transmix_lam(mixed.lam_area, lam_attn, self.cfg.area_weight)
        targets = soft_targets(labels_a, labels_b, self.num_classes, lam, self.cfg.label_smoothing)
        loss = self.loss_fn(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return StepOutput(loss.detach(), mixed.mode, mixed.lam_area, lam if reweight else None, lam_attn)

    def _mine(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a mixed batch (all of it for ``part=(0, 1)``), on the device."""
        rank, world = self.part
        local = len(batch) // world
        return batch[rank * local : (rank + 1) * local].to(self.device, non_blocking=True)


def _environment(device: torch.device, sha: str) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "timm": str(timm.__version__),
        "transmix": __version__,
        "git_sha": sha,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
    }


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def _reduce(loss: torch.Tensor, stop: bool, world: int) -> tuple[float, bool]:
    """Mean loss over processes and whether any process was asked to stop: one collective per step."""
    if world == 1:
        return float(loss), stop
    packed = torch.stack([loss.float().cpu() / world, torch.tensor(float(stop))])
    if dist.get_backend() == "nccl":
        packed = packed.to(loss.device)
    dist.all_reduce(packed)
    return float(packed[0]), bool(packed[1] > 0)


def train(cfg: TrainConfig, out_dir: str | Path, stop_after: int | None = None, progress: bool | None = None) -> Path:
    """Train (or continue) the run in ``out_dir``; returns the path of ``final.pt``, or of the checkpoint when
    ``stop_after`` epochs of this call ended before the run did.

    Args:
        cfg: the run's config.
        out_dir: the run directory; a checkpoint of the same config there is resumed.
        stop_after: leave after this many epochs of this call (to fit a run into time-limited jobs).
        progress: a progress bar; default: when stderr is a terminal (rank 0 only).

    Raises:
        Preempted: SIGTERM arrived; the checkpoint holds the state at a step boundary.
        TrainingError: the loss diverged, an image does not decode, or the directory belongs to another config.
    """
    where, device = init_distributed(cfg.device)
    try:
        return _train(cfg, Path(out_dir), where, device, stop_after, progress)
    except CorruptImage as err:  # never skipped: training on a substitute image would be silent data corruption
        checkpoint = Path(out_dir) / CHECKPOINT
        raise TrainingError(
            f"corrupt training image, training stopped: {err}. The last good checkpoint "
            f"({checkpoint if checkpoint.exists() else 'none yet'}) is kept; replace or remove the file "
            f"(`transmix data --check --root {cfg.data_dir}` lists every bad one) and run the same command again"
        ) from None
    finally:
        if where.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    cfg: TrainConfig, out: Path, where: Dist, device: torch.device, stop_after: int | None, progress: bool | None
) -> Path:
    main = where.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty()
    progress = progress and main
    train_set, val_set = load_data(cfg)
    global_batch = cfg.batch_size * where.world
    steps_per_epoch = len(train_set) // where.world // cfg.batch_size  # = len // global_batch; a shard's batches
    if steps_per_epoch == 0:
        raise TrainingError(f"a global batch of {global_batch} exceeds the {len(train_set)} training images")

    torch.manual_seed(cfg.seed)  # weight init and stochastic depth (inside the model)
    gen = torch.Generator().manual_seed(cfg.seed)  # mixing; in memory also data order and augmentation
    model = build_model(cfg, train_set).to(device)
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.sched,
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr,
        min_lr=cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None
    forward = DistributedDataParallel(model) if where.world > 1 else model
    image_size = train_set.image_shape[-2:]
    part = (where.rank, where.world)
    stepper = Stepper(cfg, forward, optimizer, train_set.num_classes, device, image_size, model,
                      part if train_set.global_batches else (0, 1))  # fmt: skip

    epoch, step, updates, history = 0, 0, 0, []
    order: torch.Tensor | None = None
    sums = _epoch_sums()
    now_sha = git_sha()
    started_sha = now_sha  # the code that started the run; a resume under other code is recorded beside it
    state = load_checkpoint(out, device)
    if state is not None:
        # A key added since the checkpoint was written takes its default, which reproduces what the run did.
        saved = {**TrainConfig().to_dict(), **state["config"]}
        if saved != cfg.to_dict():
            now = cfg.to_dict()
            diff = {k: (v, now.get(k)) for k, v in saved.items() if now.get(k) != v}
            raise TrainingError(
                f"{out / CHECKPOINT} belongs to a run with another config (checkpoint vs now: {diff}); "
                "use another output directory, or delete the directory to start over"
            )
        if state.get("world_size", 1) != where.world:
            raise TrainingError(f"{out} was trained by {state['world_size']} process(es), not {where.world}; "
                                "resume with the same number of processes")  # fmt: skip
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        epoch, updates, history = state["epoch"], state["updates"], state["history"]
        step, order, sums = state.get("step", 0), state.get("order"), {**sums, **state.get("sums", {})}  # older: fewer
        started_sha = state.get("git_sha", started_sha)
        torch.set_rng_state(state["rng_torch"])
        gen.set_state(state["rng_gen"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)
        log.info("resuming %s at epoch %d, step %d of %d", out, epoch + 1, step, steps_per_epoch)

    def save() -> None:
        if not main:
            return
        atomic_save(
            {
                "config": cfg.to_dict(),
                "git_sha": started_sha,
                "world_size": where.world,
                "epoch": epoch,
                "step": step,
                "updates": updates,
                "order": order,
                "sums": sums,
                "history": history,
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng_torch": torch.get_rng_state(),
                "rng_gen": gen.get_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            out / CHECKPOINT,
            keep_previous=True,
        )

    resolved = {
        "run_id": out.name,
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
        "effective": {
            "lr": cfg.lr,
            "lr_scaling": "none (lr used as given)",
            "world_size": where.world,
            "batch_size_per_process": cfg.batch_size,
            "global_batch_size": global_batch,
            "steps_per_epoch": steps_per_epoch,
            "mixing": "global batch, sliced per process" if train_set.global_batches else "each process's batch",
            "total_steps": steps_per_epoch * cfg.epochs,
            "train_images": len(train_set),
            "val_images": len(val_set),
            "num_params": sum(p.numel() for p in model.parameters()),
            "device": str(device),
            "optimizer": type(optimizer).__name__,
            "scheduler": type(scheduler).__name__,
            "ema": ema is not None,
        },
        "environment": _environment(device, now_sha),
    }
    if now_sha != started_sha:
        log.warning("run started at git %s, continues at %s: final.pt records both", started_sha, now_sha)
    if main:
        atomic_write_text(yaml.safe_dump(resolved, sort_keys=False), out / RESOLVED)
    if epoch >= cfg.epochs and (out / FINAL).exists():
        log.info("%s already finished", out)
        return out / FINAL

    model.train()
    done_now = 0
    log_every = max(1, steps_per_epoch // 4)
    with preemption_flag() as stop_flag:
        while epoch < cfg.epochs:
            if stop_after is not None and done_now >= stop_after:
                log.info("stopping after %d epoch(s) as asked; rerun to continue", done_now)
                return out / CHECKPOINT
            if step == 0:  # a new epoch (a resumed one keeps its order and position)
                order = train_set.epoch_order(gen)  # in memory: a permutation from gen; imagefolder: None
                sums = _epoch_sums()
            t0 = time.perf_counter()
            bar = _progress(steps_per_epoch, step, f"epoch {epoch + 1}/{cfg.epochs}", progress)
            stop = False
            for x, y in train_set.batches(cfg.batch_size, part, epoch, order, step, gen):
                result = stepper(x, y, gen)
                loss, stop = _reduce(result.loss, stop_flag[0], where.world)
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"loss is {loss} at epoch {epoch + 1}, step {step + 1}: training diverged. The last good "
                        f"checkpoint ({out / CHECKPOINT if (out / CHECKPOINT).exists() else 'none yet'}) is kept; "
                        f"the learning rate at this step was {optimizer.param_groups[0]['lr']:.3g} (lr={cfg.lr}, "
                        f"min_lr={cfg.min_lr}): lower it"
                    )
                step += 1
                updates += 1
                scheduler.step_update(updates)
                if ema is not None:
                    ema.update(model, step=updates)
                sums["loss"] += loss
                if result.mode == "cutmix":
                    sums["cutmix"] += 1
                    sums["lam_area"] += result.lam_area
                    sums["lam"] += float(result.lam.mean()) if result.lam is not None else result.lam_area
                    if result.lam_attn is not None:
                        sums["lam_attn"] += float(result.lam_attn.mean())
                        sums["lam_gap"] += float((result.lam_attn - result.lam_area).abs().mean())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}")
                elif main and step % log_every == 0:
                    log.info("epoch %d/%d step %d/%d loss %.4f", epoch + 1, cfg.epochs, step, steps_per_epoch, loss)
                if stop and step < steps_per_epoch:
                    sums["seconds"] += time.perf_counter() - t0
                    save()
                    raise Preempted(f"stopped by SIGTERM at epoch {epoch + 1}, step {step}; {out / CHECKPOINT} "
                                    "holds this state: run the same command again to continue")  # fmt: skip
            if bar is not None:
                bar.close()
            epoch += 1
            sums["seconds"] += time.perf_counter() - t0
            if main:
                acc = top_k(model, val_set, device, cfg.precision, ks=(1,))[1]
                acc_ema = top_k(ema.module, val_set, device, cfg.precision, ks=(1,))[1] if ema is not None else None
                n_cut = sums["cutmix"]
                history.append(
                    {
                        "epoch": epoch,
                        "train_loss": sums["loss"] / steps_per_epoch,
                        "lr": optimizer.param_groups[0]["lr"],
                        "val_top1": acc,
                        "val_top1_ema": acc_ema,
                        "cutmix_batches": n_cut,
                        "lam_area_mean": sums["lam_area"] / n_cut if n_cut else None,
                        "lam_label_mean": sums["lam"] / n_cut if n_cut else None,  # label weight on CutMix batches
                        # TransMix only: the attention's weight, and how far it lies from the area's per sample
                        "lam_attn_mean": sums["lam_attn"] / n_cut if n_cut and stepper.capture else None,
                        "lam_gap_mean": sums["lam_gap"] / n_cut if n_cut and stepper.capture else None,
                        "train_seconds": sums["seconds"],
                        "images_per_second": steps_per_epoch * global_batch / sums["seconds"],
                    }
                )
            order, step = None, 0
            save()
            if main:
                atomic_write_text("".join(json.dumps(h) + "\n" for h in history), out / HISTORY)
                ema_txt = f" (EMA {history[-1]['val_top1_ema']:.2f})" if ema is not None else ""
                log.info("epoch %d/%d loss %.4f val top-1 %.2f%s, %.0f img/s", epoch, cfg.epochs,
                         history[-1]["train_loss"], history[-1]["val_top1"], ema_txt,
                         history[-1]["images_per_second"])  # fmt: skip
            done_now += 1
            if stop and epoch < cfg.epochs:
                raise Preempted(f"stopped by SIGTERM after epoch {epoch}; run the same command again to continue")

    if main:
        final = {
            "config": cfg.to_dict(),
            "config_hash": cfg.hash(),
            "git_sha": started_sha if started_sha == now_sha else f"{started_sha}+{now_sha}",
            "package_version": __version__,
            "epochs": epoch,
            "model": model.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
        }
        atomic_save(final, out / FINAL)
    return out / FINAL
