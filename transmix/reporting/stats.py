"""The statistics every notebook uses: a t-interval over seeds, and a difference paired by seed.

Runs of one seed share initial weights, data order, augmentation and mixing draws; two methods then differ only in
their labels. So a method's effect is taken seed by seed (:func:`paired`), and every interval is a Student
t-interval over seeds (:func:`t_interval`): with 2 to 5 seeds a normal or bootstrap interval would be too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
from scipy import stats

from transmix.records.results import read


def load_study(results_csv: str | Path, study: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study's measured rows and the published rows of a results table.

    Raises:
        ValueError: the table holds no measured row of ``study``.
    """
    table = read(results_csv)
    ours = table[(table.source == "ours") & (table.study == study)]
    if ours.empty:
        raise ValueError(f"{results_csv} holds no measured rows of study {study!r}")
    return ours, table[table.source == "paper"]


def t_interval(values: Iterable[float], confidence: float = 0.95) -> pd.Series:
    """``mean``, the interval's ``low`` and ``high`` ends, its ``half`` width and ``n`` (missing values dropped);
    the ends are NaN for fewer than two values."""
    values = pd.Series(list(values), dtype=float).dropna()
    n, mean = len(values), values.mean()
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    return pd.Series({"mean": mean, "low": mean - half, "high": mean + half, "half": half, "n": n})


def interval_ends(confidence: float = 0.95) -> Callable[[Iterable[float]], tuple[float, float]]:
    """The ends of :func:`t_interval` as a function of the values, for seaborn's ``errorbar=``: the bands of a
    page's line plots are then the same intervals as its tables."""
    return lambda values: tuple(t_interval(values, confidence)[["low", "high"]])


def paired(frame: pd.DataFrame, by: list[str], treatment: str = "transmix", baseline: str = "deit",
           confidence: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """``treatment - baseline`` per group of ``by``, paired by seed: :func:`t_interval` of the per-seed
    differences, and ``wins``, the seeds where the treatment scored higher. Empty when a method is missing (or
    ``treatment`` is ``baseline``).

    Args:
        frame: tidy rows with ``method``, ``seed``, ``value`` and the ``by`` columns, one row per run and group.
    """
    wide = frame.pivot_table(index=[*by, "seed"], columns="method", values="value")
    if treatment == baseline or not {treatment, baseline} <= set(wide.columns):
        return pd.DataFrame()
    diff = (wide[treatment] - wide[baseline]).dropna().rename("diff").reset_index()
    groups = diff.groupby(by)["diff"]
    out = groups.apply(t_interval, confidence=confidence).unstack()
    return out.assign(wins=groups.apply(lambda d: int((d > 0).sum())))
