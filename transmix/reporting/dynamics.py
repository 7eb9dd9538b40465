"""Training dynamics from the per-epoch history every run records (``suite = history``, ``level`` = epoch).

The history follows training: the loss on the mixed targets, top-1 on the per-epoch validation images and the speed
of each epoch. Its last epoch is compared across methods seed by seed like the headline numbers, but on the smaller
validation set, so notebook 05 states it beside notebook 01's numbers, not instead of them.
"""

from __future__ import annotations

import pandas as pd

from transmix.reporting.stats import paired
from transmix.reporting.verdicts import verdict

SHOWN = ("train_loss", "val_top1")  # what the last epoch's table shows


def history(ours: pd.DataFrame) -> pd.DataFrame:
    """The main runs' history rows, ``level`` named ``epoch``."""
    return ours[(ours.suite == "history") & (ours.ablation == "")].rename(columns={"level": "epoch"})


def last_epoch(history: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows of its last epoch."""
    return history[history.epoch == history.groupby("run_id").epoch.transform("max")]


def last_epoch_table(history: pd.DataFrame) -> pd.DataFrame:
    """Loss and validation top-1 of the last epoch per model and method (rows), mean and sd over seeds per metric
    and weights (columns)."""
    last = last_epoch(history)
    return last[last.metric.isin(SHOWN)].pivot_table(index=["model", "method"], columns=["metric", "variant"],
                                                      values="value", aggfunc=["mean", "std"])  # fmt: skip


def throughput(history: pd.DataFrame) -> pd.DataFrame:
    """The median images per second of the epochs, per model (rows) and method (columns)."""
    speed = history[history.metric == "images_per_second"]
    return speed.groupby(["model", "method"]).value.median().unstack()


def conclusions(history: pd.DataFrame, confidence: float = 0.95, treatment: str = "transmix",
                baseline: str = "deit") -> list[str]:  # fmt: skip
    """A sentence per model on the last epoch's validation top-1 (EMA weights), ``treatment − baseline`` paired by
    seed, and the mean training loss of the first and the last epoch."""
    last = last_epoch(history)
    final = last[(last.metric == "val_top1") & (last.variant == "ema")]
    diff = paired(final, ["model"], treatment, baseline, confidence)
    lines = [verdict(f"{model}, last-epoch validation top-1 (EMA): {treatment} − {baseline}", r["mean"], r["low"],
                     r["high"], int(r["n"]), level=confidence) for model, r in diff.iterrows()]  # fmt: skip
    loss = history[history.metric == "train_loss"].groupby("epoch").value.mean()
    lines.append(f"Training loss, mean over runs: {loss.iloc[0]:.3f} in the first epoch, {loss.iloc[-1]:.3f} in the "
                 "last.")  # fmt: skip
    return lines
