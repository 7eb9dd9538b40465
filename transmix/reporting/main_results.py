"""The main result: top-1 of each method, each method against the study's baseline, and where that sits among the
published differences.

Runs of one seed differ only in their labels, so a method's effect is its difference from the baseline seed by seed
(:func:`differences`). The published numbers come from other datasets, models and schedules, each from one run: they
are placed beside ours on a ladder of scales (:func:`ladder`), never compared in absolute value. Notebook 01 draws
these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from transmix.config.run_id import PublishedId
from transmix.reporting.pages import method_order, published_gains
from transmix.reporting.stats import paired
from transmix.reporting.verdicts import verdict

PAPER = "transmix-paper"  # the source of the paper's own rows in paper.csv
GROUPS = ["model", "variant", "method"]


def spread(top1: pd.DataFrame) -> pd.DataFrame:
    """Top-1 per model, weights and method: ``mean``, ``std`` and ``seeds``."""
    return top1.groupby(GROUPS)["value"].agg(mean="mean", std="std", seeds="count")


def best_epochs(measured: pd.DataFrame) -> pd.DataFrame:
    """The best per-epoch validation top-1 of the main runs (``suite = best_epoch``) per model, weights and method:
    ``mean``, ``std``, ``seeds`` and ``mean_epoch``, where it was reached; empty for a table evaluated before these
    rows were recorded."""
    best = measured[(measured.suite == "best_epoch") & (measured.ablation == "")]
    if best.empty:
        return pd.DataFrame()
    stats = dict(mean=("value", "mean"), std=("value", "std"), seeds=("value", "count"), mean_epoch=("level", "mean"))
    return best.groupby(GROUPS).agg(**stats)


def interval_columns(confidence: float) -> tuple[str, str]:
    """The names of the interval's ends in :func:`differences`, which carry its level."""
    level = int(confidence * 100)
    return f"ci{level}_low", f"ci{level}_high"


def differences(top1: pd.DataFrame, baseline: str, confidence: float = 0.95) -> pd.DataFrame:
    """Each other method minus ``baseline`` per model and weights, paired by seed: ``seeds``, ``diff_mean``, the
    interval's ends (:func:`interval_columns`) and ``wins``; empty for a study of one method, or without the
    baseline."""
    methods = method_order(top1.method, baseline)
    others = [m for m in methods if m != baseline] if baseline in methods else []
    low, high = interval_columns(confidence)
    columns = {"n": "seeds", "mean": "diff_mean", "low": low, "high": high, "wins": "wins"}
    parts = [
        paired(top1, ["model", "variant"], treatment=method, baseline=baseline, confidence=confidence)
        .reset_index()
        .assign(method=method, baseline=baseline)
        for method in others
    ]
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True).rename(columns=columns)
    return out[["model", "variant", "method", "baseline", *columns.values()]].astype({"seeds": int})


def published(paper: pd.DataFrame, treatment: str = "transmix", baseline: str = "deit") -> pd.DataFrame:
    """The paper's own table: top-1 per model (rows) and method (columns), and ``gain``, treatment − baseline;
    empty cells are numbers no readable source confirms."""
    rows = paper[paper.run_id.map(lambda run: PublishedId.parse(run).source) == PAPER]
    table = rows.pivot_table(index="model", columns="method", values="value", aggfunc="first", dropna=False,
                             sort=False)  # fmt: skip
    table["gain"] = table[treatment] - table[baseline]
    return table


def ladder(paper: pd.DataFrame, differences: pd.DataFrame, top1: pd.DataFrame, variant: str,
           results_csv: str | Path, confidence: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """transmix − deit where it was measured: this study's difference per model (``variant`` weights, with its
    interval and seeds) first, then every published one (:func:`~transmix.reporting.pages.published_gains`, one
    run each, no interval), with its source, dataset, model, epochs and reference."""
    out = published_gains(paper).assign(low=math.nan, high=math.nan, seeds=1)
    if len(differences) and "transmix" in set(differences.method):
        low, high = interval_columns(confidence)
        mine = differences[(differences.method == "transmix") & (differences.variant == variant)]
        epochs = top1.groupby("model").epochs.first()
        mine = mine.assign(source="this study", dataset=top1.dataset.iloc[0], epochs=mine.model.map(epochs),
                           difference=mine.diff_mean, low=mine[low], high=mine[high],
                           reference=f"{results_csv}, {variant} weights")  # fmt: skip
        out = pd.concat([mine[out.columns], out], ignore_index=True)
    return out.astype({"epochs": int, "seeds": int})


def conclusions(differences: pd.DataFrame, paper: pd.DataFrame, methods: Sequence[str], variant: str,
                confidence: float = 0.95) -> list[str]:  # fmt: skip
    """A sentence per model and method against the baseline (``variant`` weights), and the range of the published
    TransMix − DeiT differences."""
    low, high = interval_columns(confidence)
    shown = differences[differences.variant == variant] if len(differences) else differences
    lines = [
        verdict(f"{r.model}, {r.method} − {r.baseline} ({r.variant} weights)", r.diff_mean, r[low], r[high],
                int(r.seeds), level=confidence)
        for _, r in shown.iterrows()
    ] or [f"One method ({', '.join(methods)}): nothing is compared."]  # fmt: skip
    gains = published_gains(paper)
    if len(gains):
        where = ", ".join(sorted(gains.dataset.unique()))
        lines.append(f"Published TransMix − DeiT differences ({len(gains)} single runs, {where}) range from "
                     f"{gains.difference.min():+.2f} to {gains.difference.max():+.2f} points.")  # fmt: skip
    return lines
