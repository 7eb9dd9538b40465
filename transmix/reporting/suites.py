"""Robustness as a page reads it: each suite's curve over its levels, and one number per suite.

Every main run of a study is measured on each suite at several levels (a share of patches dropped, a shuffle grid,
an epsilon, a severity). A curve is the mean over seeds with its t-interval at each level, and transmix − baseline
paired by seed at each level. The summary takes, per seed, the mean over the suite's levels that change the image:
a level that leaves the image as it was (:data:`CLEAN_LEVELS`) measures clean accuracy again and would pull every
suite towards it. Attacks, natural sets and OOD sets differ in kind, so each is a suite of its own
(``adversarial/fgsm``). Notebook 02 draws all of it; ``transmix summarize`` prints the summary.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from transmix.config.robustness import SUITES
from transmix.reporting.stats import paired, t_interval
from transmix.reporting.verdicts import by_chance, verdict

CLEAN_LEVELS = {"occlusion": 0.0, "shuffle": 1.0, "adversarial": 0.0}  # the level that leaves the image as it was
BY_SETTING = ("adversarial", "natural", "ood")  # suites whose settings (attacks, image sets) are suites of their own
SUMMARY_KEYS = ["model", "suite", "metric"]


def suite_rows(measured: pd.DataFrame, variant: str) -> pd.DataFrame:
    """The robustness suites' rows of the study's main runs, for one kind of weights."""
    rows = measured[measured.suite.isin(SUITES) & (measured.ablation == "")]
    return rows[rows.variant == variant]


def over_seeds(frame: pd.DataFrame, by: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """``mean``, ``low``, ``high`` and ``seeds`` of ``value`` per group of ``by``: the t-interval over seeds."""
    out = frame.groupby(by)["value"].apply(t_interval, confidence=confidence).unstack()
    return out[["mean", "low", "high", "n"]].rename(columns={"n": "seeds"}).astype({"seeds": int})


def paired_points(frame: pd.DataFrame, by: list[str], baseline: str, confidence: float = 0.95,
                  treatment: str = "transmix") -> pd.DataFrame:  # fmt: skip
    """``treatment − baseline`` per group of ``by`` (a protocol point, a suite), paired by seed: the mean difference
    in a column named so, its interval's ``low`` and ``high``, and ``seeds``; empty when a method is missing."""
    out = paired(frame, by, treatment=treatment, baseline=baseline, confidence=confidence)
    if out.empty:
        return out
    out = out[["mean", "low", "high", "n"]].rename(columns={"mean": f"{treatment} − {baseline}", "n": "seeds"})
    return out.astype({"seeds": int})


def level_names(suite: str, levels: Iterable[float]) -> list[str]:
    """How a suite's levels read: epsilons as k/255, fractions as percentages, grids and severities as integers."""
    if suite == "adversarial":
        return [f"{round(v * 255)}/255" for v in levels]
    if suite == "occlusion":
        return [f"{v:.0%}" for v in levels]
    return [f"{v:g}" for v in levels]


def named_levels(table: pd.DataFrame, suite: str) -> pd.DataFrame:
    """``table`` (indexed by ``level`` among others) with each level shown by its name (:func:`level_names`)."""
    if table.empty:
        return table
    levels = sorted(table.index.unique(level="level"))
    return table.rename(index=dict(zip(levels, level_names(suite, levels), strict=True)), level="level")


def described(frame: pd.DataFrame, confidence: float = 0.95) -> str:
    """What every point of a curve stands for: the interval, the seeds, and the images per run and point."""
    images = ", ".join(str(int(n)) for n in sorted(frame.n.dropna().unique()))
    return f"mean ± {int(confidence * 100)}% t-interval over {frame.seed.nunique()} seeds, {images} images per point"


def corruption_means(rows: pd.DataFrame) -> pd.DataFrame:
    """The corruption suite per run and severity: ``value``, the mean top-1 over the corruptions, and ``n``."""
    out = rows.groupby(["model", "method", "seed", "level"]).agg(value=("value", "mean"), n=("n", "first"))
    return out.reset_index()


def per_corruption(rows: pd.DataFrame) -> pd.DataFrame:
    """Top-1 per corruption (rows) and method (columns), the mean over models, seeds and severities."""
    return rows.pivot_table(index="setting", columns="method", values="value", aggfunc="mean")


def suite_means(rows: pd.DataFrame) -> pd.DataFrame:
    """One number per suite, metric and run: the mean over the suite's levels (and corruptions) that change the
    image. ``suite`` names an attack, a natural set or an OOD set as a suite of its own (``adversarial/fgsm``)."""
    changes = [CLEAN_LEVELS.get(s) != v for s, v in zip(rows.suite, rows.level, strict=True)]
    changed = rows[pd.Series(changes, index=rows.index, dtype=bool)]
    suite = changed.suite.where(~changed.suite.isin(BY_SETTING), changed.suite + "/" + changed.setting)
    keys = [*SUMMARY_KEYS, "method", "seed"]
    return changed.assign(suite=suite).groupby(keys)["value"].mean().reset_index()


def suite_differences(means: pd.DataFrame, baseline: str, confidence: float = 0.95,
                      treatment: str = "transmix") -> pd.DataFrame:  # fmt: skip
    """:func:`paired_points` of :func:`suite_means`: ``treatment − baseline`` per model, suite and metric."""
    if means.empty:
        return pd.DataFrame()
    return paired_points(means, SUMMARY_KEYS, baseline, confidence, treatment)


def conclusions(differences: pd.DataFrame, baseline: str, confidence: float = 0.95,
                treatment: str = "transmix") -> list[str]:  # fmt: skip
    """A sentence per suite from :func:`suite_differences` (:func:`~transmix.reporting.verdicts.verdict`), and how
    many of them would exclude zero by chance alone."""
    if differences.empty:
        return [f"No paired {treatment} − {baseline} difference in this study."]
    column = f"{treatment} − {baseline}"
    lines = [verdict(f"{model}, {suite} {metric}: {column}", r[column], r["low"], r["high"], int(r["seeds"]),
                     level=confidence) for (model, suite, metric), r in differences.iterrows()]  # fmt: skip
    return [*lines, by_chance(len(differences), confidence)]
