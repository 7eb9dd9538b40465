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
from transmix.data.prepare import TRAIN_IMAGES as FASHION_TRAIN_IMAGES
from transmix.reporting.pages import method_order, published_gains
from transmix.reporting.stats import paired
from transmix.reporting.verdicts import verdict

PAPER = "transmix-paper"  # the source of the paper's own rows in paper.csv
LADDER = ["source", "dataset", "model", "train_images", "epochs", "difference", "low", "high", "seeds", "reference"]
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


def training_images(study_config: str | Path, model: str) -> int | None:
    """How many training images a study's runs of ``model`` saw, from its config (``train_subset``; 0 is the whole
    training split, whose size only Fashion-MNIST's config implies); ``None`` when the config cannot say."""
    import yaml

    config = yaml.safe_load(Path(study_config).read_text())
    train = {**config.get("train", {}), **config.get("overrides", {}).get(model, {})}
    if train.get("train_subset"):
        return int(train["train_subset"])
    return FASHION_TRAIN_IMAGES if train.get("dataset", "fashion_mnist") == "fashion_mnist" else None


def rung(table: pd.DataFrame, name: str, study_config: str | Path, variant: str,
         confidence: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """Another study's transmix − deit per model (``variant`` weights, paired by seed, with its interval), as rows of
    :func:`ladder` labelled with the study's name, dataset, training images and epochs."""
    ours = table[
        (table.source == "ours") & (table.suite == "clean") & (table.ablation == "") & (table.metric == "top1")
    ]
    diff = differences(ours, "deit", confidence)
    if diff.empty or "transmix" not in set(diff.method):
        return pd.DataFrame(columns=LADDER)
    low, high = interval_columns(confidence)
    mine = diff[(diff.method == "transmix") & (diff.variant == variant)]
    epochs = ours.groupby("model").epochs.first()
    return mine.assign(source=f"study {name}", dataset=ours.dataset.iloc[0], epochs=mine.model.map(epochs),
                       train_images=mine.model.map(lambda m: training_images(study_config, m)),
                       difference=mine.diff_mean, low=mine[low], high=mine[high],
                       reference=f"results/{name}/results.csv, {variant} weights")[LADDER]  # fmt: skip


def ladder(paper: pd.DataFrame, differences: pd.DataFrame, top1: pd.DataFrame, variant: str,
           results_csv: str | Path, confidence: float = 0.95, train_images: int | None = None,
           rungs: Sequence[pd.DataFrame] = ()) -> pd.DataFrame:  # fmt: skip
    """transmix − deit where it was measured: this study's difference per model (``variant`` weights, with its
    interval and seeds, on ``train_images`` training images) first, then the other studies' ``rungs``
    (:func:`rung`), then every published one (:func:`~transmix.reporting.pages.published_gains`, one run each, no
    interval), with its source, dataset, model, training images (where known), epochs and reference."""
    out = published_gains(paper).assign(low=math.nan, high=math.nan, seeds=1, train_images=None)
    if len(differences) and "transmix" in set(differences.method):
        low, high = interval_columns(confidence)
        mine = differences[(differences.method == "transmix") & (differences.variant == variant)]
        epochs = top1.groupby("model").epochs.first()
        mine = mine.assign(source="this study", dataset=top1.dataset.iloc[0], epochs=mine.model.map(epochs),
                           train_images=train_images, difference=mine.diff_mean, low=mine[low], high=mine[high],
                           reference=f"{results_csv}, {variant} weights")  # fmt: skip
        out = pd.concat([mine[out.columns], *[r[out.columns] for r in rungs if len(r)], out], ignore_index=True)
    out = out.astype({"epochs": int, "seeds": int})
    return out.assign(train_images=out.train_images.astype("Int64"))


def ladder_labels(ladder: pd.DataFrame) -> pd.Series:
    """One label per rung: where, on what, and how long (``study small_data: fashion_mnist, 500 images, 400 ep``)."""
    images = ladder.train_images.map(lambda n: "" if pd.isna(n) else f", {int(n):,} images")
    return (
        ladder.source + ": " + ladder.dataset + images + ", " + ladder.model + ", " + ladder.epochs.astype(str) + " ep"
    )


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


def mixing_pays(table: pd.DataFrame, variant: str = "ema") -> pd.DataFrame:
    """Whether DeiT's mixing earns its keep, run by run: per model, setting (``ablation``: "" for a study's main runs,
    a point such as the scout's ``scout=n500_e400_dp0_ls0.1`` otherwise), schedule (``epochs``) and seed, the test
    top-1 of ``none`` and ``deit`` (``variant`` weights), ``deit − none``, and the last epoch's training loss of each;
    only where both methods ran. A model trained without mixing whose loss falls to the label-smoothing floor has
    memorised its images; mixing can only pay where that happens, and only there can TransMix's refinement of it be
    tested."""
    ours = table[(table.source == "ours") & table.method.isin(["none", "deit"])]
    top1 = ours[(ours.suite == "clean") & (ours.metric == "top1") & (ours.variant == variant)]
    keys = ["model", "ablation", "epochs", "seed"]
    wide = top1.pivot_table(index=keys, columns="method", values="value").dropna()
    loss = ours[(ours.suite == "history") & (ours.metric == "train_loss")].sort_values("level")
    last = loss.groupby([*keys, "method"]).value.last().unstack("method").add_prefix("final loss ")
    return wide.assign(**{"deit − none": wide.deit - wide.none}).join(last).reset_index()
