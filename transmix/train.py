"""The training loop: one run directory per run, atomic checkpoints every epoch, automatic resume.

A run directory holds ``config.resolved.yaml`` (every hyperparameter as used, plus versions and git sha),
``history.jsonl`` (one JSON line per epoch), ``checkpoint.pt`` (everything needed to continue, including every
RNG state) and, when training finished, ``final.pt`` (raw and EMA weights). Starting a run in a directory that
holds a checkpoint of the same config continues it; the result equals an uninterrupted run.

Optimizer, scheduler, EMA and loss come from timm's factories. The method lives in :mod:`transmix.mixing` and
:mod:`transmix.attention`; this loop only decides per batch whether the label is re-weighted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import yaml
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn

from transmix import __version__
from transmix.attention import ClassAttention
from transmix.config import TrainConfig
from transmix.data import TensorDataset, eval_batches, load_fashion_mnist, train_batches
from transmix.mixing import attention_lam, box_mask, mix_batch, mix_spec, soft_targets, transmix_lam
from transmix.models import create_model
from transmix.results import git_sha

log = logging.getLogger(__name__)

CHECKPOINT, FINAL, HISTORY, RESOLVED = "checkpoint.pt", "final.pt", "history.jsonl", "config.resolved.yaml"


class TrainingError(RuntimeError):
    """Training cannot go on (a diverged loss, a run directory of another config); the message says why."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device={name} asked for, but no CUDA device is available; use device=cpu or auto")
    return device


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, rename: never a truncated file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_data(cfg: TrainConfig) -> tuple[TensorDataset, TensorDataset]:
    train = load_fashion_mnist(cfg.data_dir, train=True).head(cfg.train_subset)
    val = load_fashion_mnist(cfg.data_dir, train=False).head(cfg.val_subset)
    return train, val


def build_model(cfg: TrainConfig, data: TensorDataset) -> nn.Module:
    _, chans, height, _ = data.images.shape
    return create_model(
        cfg.model, num_classes=data.num_classes, in_chans=chans, img_size=height, drop_path=cfg.drop_path
    )


@torch.no_grad()
def top_k(
    model: nn.Module,
    data: TensorDataset,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 500,
    ks: tuple[int, ...] = (1, 5),
) -> dict[int, float]:
    """Top-k accuracy in percent."""
    was_training = model.training
    model.eval()
    correct = dict.fromkeys(ks, 0)
    for x, y in eval_batches(data, batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x)
        ranked = logits.float().topk(max(ks), dim=1).indices
        hits = ranked == y[:, None]
        for k in ks:
            correct[k] += int(hits[:, :k].any(dim=1).sum())
    model.train(was_training)
    return {k: 100.0 * c / len(data) for k, c in correct.items()}


@dataclass
class StepOutput:
    loss: torch.Tensor
    mode: str
    lam_area: float
    lam: torch.Tensor | None  # per-sample label weight used, for CutMix batches


class Stepper:
    """One training step of any method; shared by :func:`train` and ``transmix bench``."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        num_classes: int,
        device: torch.device,
        image_size: tuple[int, int],
    ):
        self.cfg, self.model, self.optimizer, self.device = cfg, model, optimizer, device
        self.num_classes = num_classes
        self.spec = mix_spec(cfg.method, cfg.mixup_alpha, cfg.cutmix_alpha, cfg.switch_prob, cfg.mix_prob)
        self.capture = ClassAttention(model) if cfg.method == "transmix" else None
        self.image_size = image_size
        self.loss_fn = SoftTargetCrossEntropy()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> StepOutput:
        mixed = mix_batch(x, y, self.spec, gen)
        images = mixed.images.to(self.device, non_blocking=True)
        labels = mixed.labels_a.to(self.device, non_blocking=True)
        reweight = self.capture is not None and mixed.mode == "cutmix"
        if self.capture is not None:
            self.capture.enabled = reweight
        with autocast(self.device, self.cfg.precision):
            logits = self.model(images)
        lam: float | torch.Tensor = mixed.lam_area
        if reweight:
            assert self.capture.attn is not None and mixed.box is not None
            mask = box_mask(mixed.box, self.image_size, self.capture.grid, self.cfg.box_to_grid)
            lam = transmix_lam(mixed.lam_area, attention_lam(self.capture.attn, mask), self.cfg.area_weight)
        targets = soft_targets(labels, self.num_classes, lam, self.cfg.label_smoothing)
        loss = self.loss_fn(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return StepOutput(loss.detach(), mixed.mode, mixed.lam_area, lam if reweight else None)


def _environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "timm": str(timm.__version__),
        "transmix": __version__,
        "git_sha": git_sha(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
    }


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def train(cfg: TrainConfig, out_dir: str | Path, stop_after: int | None = None, progress: bool | None = None) -> Path:
    """Train (or continue) the run in ``out_dir``; returns the path of ``final.pt``, or of the checkpoint when
    ``stop_after`` epochs of this call ended before the run did.

    Args:
        cfg: the run's config.
        out_dir: the run directory; a checkpoint of the same config there is resumed.
        stop_after: leave after this many epochs of this call (to fit a run into time-limited jobs).
        progress: a progress bar; default: when stderr is a terminal.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty()
    device = resolve_device(cfg.device)
    train_set, val_set = load_data(cfg)
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(f"batch_size={cfg.batch_size} exceeds the {len(train_set)} training images")

    torch.manual_seed(cfg.seed)  # weight init and stochastic depth (inside the model)
    gen = torch.Generator().manual_seed(cfg.seed)  # data order, augmentation, mixing
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
    stepper = Stepper(cfg, model, optimizer, train_set.num_classes, device, tuple(train_set.images.shape[-2:]))

    epoch, updates, history = 0, 0, []
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state["config"] != cfg.to_dict():
            diff = {k: (v, cfg.to_dict().get(k)) for k, v in state["config"].items() if cfg.to_dict().get(k) != v}
            raise TrainingError(
                f"{ckpt_path} belongs to a run with another config (checkpoint vs now: {diff}); "
                "use another output directory, or delete the directory to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        epoch, updates, history = state["epoch"], state["updates"], state["history"]
        torch.set_rng_state(state["rng_torch"])
        gen.set_state(state["rng_gen"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)
        log.info("resuming %s after epoch %d of %d", out, epoch, cfg.epochs)

    resolved = {
        "run_id": out.name,
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
        "effective": {
            "lr": cfg.lr,
            "lr_scaling": "none (lr used as given)",
            "world_size": 1,
            "global_batch_size": cfg.batch_size,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": steps_per_epoch * cfg.epochs,
            "train_images": len(train_set),
            "val_images": len(val_set),
            "num_params": sum(p.numel() for p in model.parameters()),
            "device": str(device),
            "optimizer": type(optimizer).__name__,
            "scheduler": type(scheduler).__name__,
            "ema": ema is not None,
        },
        "environment": _environment(device),
    }
    atomic_write_text(yaml.safe_dump(resolved, sort_keys=False), out / RESOLVED)

    if epoch >= cfg.epochs and (out / FINAL).exists():
        log.info("%s already finished", out)
        return out / FINAL
    model.train()
    done_now = 0
    while epoch < cfg.epochs:
        if stop_after is not None and done_now >= stop_after:
            log.info("stopping after %d epoch(s) as asked; rerun to continue", done_now)
            return ckpt_path
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "cutmix": 0, "lam_area": 0.0, "lam": 0.0}
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        log_every = max(1, steps_per_epoch // 4)
        for step, (x, y) in enumerate(train_batches(train_set, cfg.batch_size, gen)):
            result = stepper(x, y, gen)
            loss = float(result.loss)
            if not math.isfinite(loss):
                raise TrainingError(
                    f"loss is {loss} at epoch {epoch + 1}, step {step + 1}: training diverged. The last good "
                    f"checkpoint ({ckpt_path if ckpt_path.exists() else 'none yet'}) is kept; lower lr (now {cfg.lr})"
                )
            updates += 1
            scheduler.step_update(updates)
            if ema is not None:
                ema.update(model, step=updates)
            sums["loss"] += loss
            if result.mode == "cutmix":
                sums["cutmix"] += 1
                sums["lam_area"] += result.lam_area
                sums["lam"] += float(result.lam.mean()) if result.lam is not None else result.lam_area
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
            elif (step + 1) % log_every == 0:
                log.info("epoch %d/%d step %d/%d loss %.4f", epoch + 1, cfg.epochs, step + 1, steps_per_epoch, loss)
        if bar is not None:
            bar.close()
        epoch += 1
        seconds = time.perf_counter() - t0
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
                "lam_label_mean": sums["lam"] / n_cut if n_cut else None,  # the label weight used on CutMix batches
                "train_seconds": seconds,
                "images_per_second": steps_per_epoch * cfg.batch_size / seconds,
            }
        )
        state = {
            "config": cfg.to_dict(),
            "epoch": epoch,
            "updates": updates,
            "history": history,
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_gen": gen.get_state(),
        }
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(device)
        atomic_save(state, ckpt_path)
        atomic_write_text("".join(json.dumps(h) + "\n" for h in history), out / HISTORY)
        ema_txt = f" (EMA {acc_ema:.2f})" if acc_ema is not None else ""
        log.info(
            "epoch %d/%d loss %.4f val top-1 %.2f%s, %.0f img/s",
            epoch,
            cfg.epochs,
            history[-1]["train_loss"],
            acc,
            ema_txt,
            history[-1]["images_per_second"],
        )
        done_now += 1

    final = {
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "git_sha": resolved["environment"]["git_sha"],
        "package_version": __version__,
        "epochs": epoch,
        "model": model.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
    }
    atomic_save(final, out / FINAL)
    return out / FINAL
