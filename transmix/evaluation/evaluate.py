"""Evaluation of a finished run as tidy rows: top-k and calibration on the test split
(:mod:`transmix.training.accuracy`), the training history, and the attention against the area on CutMix pairs
(:mod:`.pairs`). ``final.pt`` is read once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from transmix.config.run import TrainConfig
from transmix.config.study import PAIRS_SEED
from transmix.data import Split, eval_split
from transmix.evaluation.finished import load_final, variants
from transmix.evaluation.pairs import PAIRS, PASTING, cutmix_pairs
from transmix.records.results import frame
from transmix.training.accuracy import scores
from transmix.training.checkpoint import HISTORY
from transmix.training.runtime import resolve_device

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
        "lock": state.get("lock", ""),  # the stack it trained on; runs finished before the lock have none
    }


def clean(run_dir: str | Path, device: str = "auto", batch_size: int = 500, images: int = 0,
          pairs: int = PAIRS) -> pd.DataFrame:  # fmt: skip
    """Top-1 and top-5 (percent) on the test split (imagefolder: ``val/``), for raw and EMA weights: all of it, or
    ``images`` of it (:func:`transmix.data.eval_split`); ``n`` in the rows says how many. With them the
    calibration (:func:`~transmix.training.accuracy.scores`), the history and ``pairs`` CutMix pairs'
    attention-against-area statistics (:func:`attention_rows`; 0: none)."""
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
    rows += attention_rows(cfg, models, test if not images else eval_split(cfg, 0), pairs)  # pairs: the whole split
    run = run_columns(run_dir, cfg, state)
    return frame({**run, **row} for row in rows)


def attention_rows(cfg: TrainConfig, models: dict[str, nn.Module], test: Split,
                   pairs: int = PAIRS) -> list[dict[str, Any]]:  # fmt: skip
    """Attention against area on ``pairs`` CutMix pairs of test images, as ``suite = attention_area`` rows per
    variant: the mean |λ_attn − λ_area| (``gap_mean``), their correlation, and the share of pairs whose attention
    label is below the area label (``attn_below_area``, percent). Notebook 04 shows them over every run and seed,
    so its figure of one run traces to a committed table. Runs whose method pastes no box have none."""
    if cfg.method not in PASTING or not pairs:
        return []
    rows = []
    for variant, model in models.items():
        drawn = cutmix_pairs(cfg, model, test, pairs, seed=PAIRS_SEED)
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
