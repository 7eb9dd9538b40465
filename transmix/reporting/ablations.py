"""Ablation points against the study's own runs: each point changes one setting, and is judged seed by seed.

A point (``area_weight=0.0``) trains the study's recipe with one setting changed, on the seeds of the study's own
runs; those runs (``ablation`` empty) are the reference point of every axis, shown at the study's own value. So a
point's effect is its change against the study's run of the same model, method and seed (:func:`changes`). Axes that
change the shared recipe (switch probability, CutMix alpha) train both methods, so the TransMix gain can be read at
each of their values (:func:`gains`). Notebook 03 draws these; ``transmix summarize`` prints the changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from transmix.config.run_id import Ablation, parse_point
from transmix.reporting.distillation import is_student
from transmix.reporting.stats import paired, t_interval
from transmix.reporting.verdicts import by_chance, verdict

# What some values mean: the paper's landmarks on its own axes.
LANDMARKS = {("area_weight", "0.0"): "attention only", ("area_weight", "1.0"): "area only (= deit's label)"}
KEYS = ["model", "method", "value_label"]


def top1(ours: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Top-1 on the test split of every run but the distillation students', for one kind of weights, with the
    point's ``axis`` and ``value_label`` (empty and missing for the study's own runs)."""
    rows = ours[(ours.suite == "clean") & (ours.metric == "top1") & (ours.variant == variant)]
    rows = rows[~is_student(rows.ablation)]
    points = [parse_point(text) for text in rows.ablation]
    axis = [p.key if isinstance(p, Ablation) else "" for p in points]
    value = [p.value if isinstance(p, Ablation) else pd.NA for p in points]
    return rows.assign(axis=pd.array(axis, dtype="string"), value_label=pd.array(value, dtype="string"))


def axes(top1: pd.DataFrame) -> list[str]:
    """The study's ablation axes, in alphabetical order."""
    return sorted(a for a in top1.axis.dropna().unique() if a)


def study_label(axis: str, axis_defaults: Mapping[str, Any]) -> str:
    """How the study's own runs are labelled on an axis: the study's value of it, marked as the study's."""
    return str(axis_defaults.get(axis, "study")) + " (study)"


def value_order(label: Any) -> tuple[int, float, str]:
    """Numeric values in numeric order ("-4" before "-1 (study)"), other labels alphabetically after them."""
    try:
        return (0, float(str(label).split()[0]), "")
    except ValueError:
        return (1, 0.0, str(label))


def is_numeric(labels: Iterable[Any]) -> bool:
    """Whether every value of an axis is a number, so that a line may join them."""
    return all(value_order(label)[0] == 0 for label in labels)


def tick_label(axis: str, value: str) -> str:
    """A value as an axis shows it, with what it means where it is one of the paper's landmarks."""
    return f"{value}\n{LANDMARKS[(axis, value)]}" if (axis, value) in LANDMARKS else value


def axis_table(top1: pd.DataFrame, axis: str, axis_defaults: Mapping[str, Any],
               confidence: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """:func:`~transmix.reporting.stats.t_interval` of top-1 per model, method and value of one axis, the study's
    own runs included at their value (those of the models and methods the axis trains), values in
    :func:`value_order`."""
    own = top1[top1.ablation == ""].assign(axis=axis, value_label=study_label(axis, axis_defaults))
    points = top1[top1.axis == axis]
    own = own[own.method.isin(points.method.unique()) & own.model.isin(points.model.unique())]
    both = pd.concat([own, points])
    out = both.groupby(KEYS)["value"].apply(t_interval, confidence=confidence).unstack().reset_index()
    return out.sort_values(KEYS, key=lambda column: column.map(value_order)).set_index(KEYS)


def changes(top1: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Each point's change against the study's own runs, per model and method it trains, paired by seed: ``point``,
    ``model``, ``method``, and the t-interval of the per-seed changes (``mean``, ``low``, ``high``, ``half``, ``n``
    pairs)."""
    own = top1[top1.ablation == ""].set_index(["model", "method", "seed"])["value"].sort_index()
    rows = []
    for (point, model, method), runs in top1[top1.ablation != ""].groupby(["ablation", "model", "method"]):
        diff = (runs.set_index("seed")["value"] - own.loc[(model, method)]).dropna()
        rows.append({"point": point, "model": model, "method": method, **t_interval(diff, confidence)})
    columns = ["point", "model", "method", "mean", "low", "high", "half", "n"]
    return pd.DataFrame(rows, columns=columns).astype({"n": int})


def gains(top1: pd.DataFrame, axis_defaults: Mapping[str, Any], confidence: float = 0.95,
          treatment: str = "transmix", baseline: str = "deit") -> pd.DataFrame:  # fmt: skip
    """``treatment − baseline`` at each value of every axis whose points train both, the study's own runs at their
    value included, paired by seed (:func:`~transmix.reporting.stats.paired`): ``axis``, ``model``,
    ``value_label`` and the interval's columns; empty when no axis trains both."""
    parts = []
    for axis in axes(top1):
        if set(top1[top1.axis == axis].method) >= {treatment, baseline}:
            rows = top1[(top1.axis == axis) | (top1.ablation == "")]
            rows = rows.assign(value_label=rows.value_label.fillna(study_label(axis, axis_defaults)))
            diff = paired(rows, ["model", "value_label"], treatment, baseline, confidence)
            parts.append(diff.reset_index().assign(axis=axis))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def conclusions(changes: pd.DataFrame, gains: pd.DataFrame, confidence: float = 0.95,
                treatment: str = "transmix", baseline: str = "deit") -> list[str]:  # fmt: skip
    """A sentence per point and model and method it trains (:func:`changes`), one per value of the axes that train
    both methods (:func:`gains`; the study's own value is notebook 01's), and how many of them would exclude zero
    by chance alone."""
    lines = [verdict(f"{r.point}, {r.model} {r.method}: change against the study's runs", r.mean, r.low, r.high,
                     int(r.n), level=confidence) for r in changes.itertuples()]  # fmt: skip
    lines += [
        verdict(f"{r.axis}={r.value_label}, {r.model}: {treatment} − {baseline}", r["mean"], r.low, r.high, int(r.n),
                level=confidence)
        for _, r in gains.iterrows()
        if not str(r.value_label).endswith("(study)")
    ]  # fmt: skip
    return [*lines, by_chance(len(lines), confidence)]
