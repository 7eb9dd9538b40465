"""Evaluation of a finished run: top-k on the test split and the training history, as tidy rows.

:func:`top_k` is the one accuracy every number of this package is measured with (per-epoch validation in training,
the clean rows here, each robustness point), so an unperturbed robustness point equals the clean accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from transmix.checkpoint import HISTORY, read_final
from transmix.config import TrainConfig, from_dict
from transmix.data import Split, eval_split
from transmix.models import build_model
from transmix.results import frame
from transmix.runtime import autocast, resolve_device

PAIRS = 500  # CutMix pairs of test images per run and variant for the attention-against-area statistics
PASTING = ("cutmix", "deit", "transmix")  # the methods that paste boxes, and so have an area label to compare

# history.jsonl fields kept as `suite = history` rows (level = epoch): the training dynamics and the TransMix weights
HISTORY_METRICS = {
    "train_loss": ("raw", "train_loss"),
    "val_top1": ("raw", "val_top1"),
    "val_top1_ema": ("ema", "val_top1"),
    "lam_area_mean": ("raw", "lam_area_mean"),
    "lam_label_mean": ("raw", "lam_label_mean"),
    "lam_attn_mean": ("raw", "lam_attn_mean"),
    "lam_gap_mean": ("raw", "lam_gap_mean"),
    "images_per_second": ("raw", "images_per_second"),
}


@torch.no_grad()
def top_k(
    model: nn.Module,
    data: Split,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 500,
    ks: tuple[int, ...] = (1, 5),
) -> dict[int, float]:
    """Top-k accuracy in percent, in eval mode whatever mode the model is in (and left in its mode)."""
    return scores(model, data, device, precision, batch_size, ks, bins=0)[0]


@torch.no_grad()
def calibration(model: nn.Module, data: Split, device: torch.device, precision: str = "fp32",
                batch_size: int = 500, bins: int = 15) -> dict[str, float]:  # fmt: skip
    """How far the model's confidence is from its accuracy, and how smooth its outputs are (:func:`scores`)."""
    return scores(model, data, device, precision, batch_size, ks=(1,), bins=bins)[1]


@torch.no_grad()
def scores(model: nn.Module, data: Split, device: torch.device, precision: str = "fp32", batch_size: int = 500,
           ks: tuple[int, ...] = (1, 5), bins: int = 15) -> tuple[dict[int, float], dict[str, float]]:  # fmt: skip
    """Top-k accuracy (percent) and, with ``bins``, the calibration, from one pass over ``data`` in eval mode.

    The calibration: the expected calibration error (percent; ``bins`` equal-width bins of the top softmax
    probability, each weighted by its share of images) and the mean entropy of the softmax (nats; ``log(classes)``
    for a uniform output). MIX-KD (Choi et al., WACV 2023) ties a teacher's usefulness to this smoothness, so every
    run reports both (``suite = calibration``). One pass serves both because a pass over the test split is the cost
    of an evaluation."""
    was_training = model.training
    model.eval()
    correct = dict.fromkeys(ks, 0)
    confidence, hit, entropy = [], [], []
    for x, y in data.eval_batches(batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x).float()
        ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # top-5 of 3 classes: all
        hits = ranked == y[:, None]
        for k in ks:
            correct[k] += int(hits[:, :k].any(dim=1).sum())
        if bins:
            probs = logits.softmax(dim=1)
            top, pred = probs.max(dim=1)
            confidence.append(top.cpu())
            hit.append((pred == y).float().cpu())
            entropy.append(torch.special.entr(probs).sum(dim=1).cpu())
    model.train(was_training)
    accuracy = {k: 100.0 * c / len(data) for k, c in correct.items()}
    if not bins:
        return accuracy, {}
    conf, right = torch.cat(confidence), torch.cat(hit)
    which = torch.clamp((conf * bins).long(), max=bins - 1)
    ece = sum((which == b).float().mean() * (conf[which == b].mean() - right[which == b].mean()).abs()
              for b in range(bins) if (which == b).any())  # fmt: skip
    return accuracy, {"ece": 100.0 * float(ece), "entropy": float(torch.cat(entropy).mean())}


def load_final(run_dir: str | Path, device: torch.device) -> tuple[TrainConfig, dict[str, Any]]:
    """A finished run's config and saved state (``weights_only`` load)."""
    state = read_final(Path(run_dir), device)
    return from_dict(state["config"]), state


def variants(cfg: TrainConfig, state: dict[str, Any], like: Split, device: torch.device) -> dict[str, nn.Module]:
    """The run's models by variant, built for ``like``'s images: ``raw`` and, when it trained an EMA, ``ema``; in
    eval mode."""
    out = {}
    for name, key in (("raw", "model"), ("ema", "ema")):
        if state[key] is None:
            continue
        model = build_model(cfg, like).to(device)
        model.load_state_dict(state[key])
        out[name] = model.eval()
    return out


def run_columns(run_dir: str | Path, cfg: TrainConfig, state: dict[str, Any]) -> dict[str, Any]:
    """The columns every measured row of a run shares: who trained what, with which code."""
    return {
        "study": cfg.study,
        "run_id": Path(run_dir).name,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "method": cfg.method,
        "ablation": cfg.ablation,
        "seed": cfg.seed,
        "epochs": state["epochs"],
        "source": "ours",
        "reference": "",
        "config_hash": state["config_hash"],
        "git_sha": state["git_sha"],
        "package_version": state["package_version"],
    }


def clean(run_dir: str | Path, device: str = "auto", batch_size: int = 500, images: int = 0,
          pairs: int = PAIRS) -> pd.DataFrame:  # fmt: skip
    """Top-1 and top-5 (percent) on the test split (imagefolder: ``val/``), for raw and EMA weights: all of it, or
    ``images`` of it (:func:`transmix.data.eval_split`); ``n`` in the rows says how many. With them the
    calibration (:func:`calibration`), the history and ``pairs`` CutMix pairs' attention-against-area statistics
    (:func:`attention_rows`; 0: none)."""
    dev = resolve_device(device)
    cfg, state = load_final(run_dir, dev)
    test = eval_split(cfg, images)
    rows = []
    models = variants(cfg, state, test, dev)
    for variant, model in models.items():
        accuracy, calibrated = scores(model, test, dev, cfg.precision, batch_size=batch_size)
        for k, value in accuracy.items():
            rows.append({"suite": "clean", "variant": variant, "metric": f"top{k}", "value": value, "n": len(test)})
        for metric, value in calibrated.items():
            rows.append({"suite": "calibration", "variant": variant, "metric": metric, "value": value, "n": len(test)})
    rows += history_rows(run_dir, cfg)
    rows += attention_rows(run_dir, cfg, list(models), device, pairs)
    run = run_columns(run_dir, cfg, state)
    return frame({**run, **row} for row in rows)


def attention_rows(run_dir: str | Path, cfg: TrainConfig, names: list[str], device: str,
                   pairs: int = PAIRS) -> list[dict[str, Any]]:  # fmt: skip
    """Attention against area on ``pairs`` CutMix pairs of test images, as ``suite = attention_area`` rows per
    variant: the mean |λ_attn − λ_area| (``gap_mean``), their correlation, and the share of pairs whose attention
    label is below the area label (``attn_below_area``, percent). Notebook 04 shows them over every run and seed,
    so its figure of one run traces to a committed table. Runs whose method pastes no box have none."""
    if cfg.method not in PASTING or not pairs:
        return []
    from transmix.pairs import cutmix_pairs

    rows = []
    for variant in names:
        drawn = cutmix_pairs(run_dir, pairs, seed=1, variant=variant, device=device)
        area, attn = (torch.tensor([getattr(p, key) for p in drawn]) for key in ("lam_area", "lam_attn"))
        values = {"gap_mean": (attn - area).abs().mean(),
                  "correlation": torch.corrcoef(torch.stack((area, attn)))[0, 1],
                  "attn_below_area": 100 * (attn < area).float().mean()}  # fmt: skip
        rows += [{"suite": "attention_area", "variant": variant, "metric": metric, "value": float(value),
                  "n": len(drawn)} for metric, value in values.items()]  # fmt: skip
    return rows


def history_rows(run_dir: str | Path, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The run's per-epoch history as ``suite = history`` rows, ``level`` = epoch (see :data:`HISTORY_METRICS`).

    ``val_top1`` is on the ``val_subset`` images; ``lam_*`` are means over the epoch's CutMix batches (empty for
    epochs without one, and ``lam_attn``/``lam_gap`` for runs that read no attention).
    """
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run directory is incomplete")
    rows = []
    for line in path.read_text().splitlines():
        epoch = json.loads(line)
        for field, (variant, metric) in HISTORY_METRICS.items():
            if epoch.get(field) is not None:
                n = cfg.val_subset if metric == "val_top1" and cfg.val_subset else None
                rows.append({"suite": "history", "level": epoch["epoch"], "variant": variant, "metric": metric,
                             "value": float(epoch[field]), "n": n})  # fmt: skip
    return rows + best_epoch_rows(rows)


def best_epoch_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best per-epoch validation top-1 of each variant, as ``suite = best_epoch`` rows (``level`` = the epoch
    that reached it, the earliest on a tie): what the release tracked and saved as its best checkpoint, and what
    papers often report, beside the final top-1 (``clean``). Same images as the history's ``val_top1``."""
    best: dict[str, dict[str, Any]] = {}
    for row in history:
        if row["metric"] == "val_top1" and row["value"] > best.get(row["variant"], {"value": -1.0})["value"]:
            best[row["variant"]] = row
    return [{**row, "suite": "best_epoch", "metric": "top1"} for row in best.values()]
