"""Attention against area: how far TransMix's label moves from CutMix's, on real pairs and during training.

CutMix labels a mixed image by the pasted area (``lam_area``); TransMix by the share of the class token's attention
(``lam_attn``). ``transmix evaluate`` draws :data:`~transmix.config.study.PAIRS` CutMix pairs of test images per run
and weights with :data:`~transmix.config.study.PAIRS_SEED` and stores three statistics of them as ``suite =
attention_area`` rows: the mean gap |λ_attn − λ_area| (``gap_mean``), the correlation and the percentage of pairs
whose attention label is below the area label (``attn_below_area``). Notebook 04 draws one run's pairs again to
plot them; where its draws are the stored ones, its numbers are read from the table (:func:`scatter_statistics`),
so the page and the table cannot disagree. Nothing here needs torch: pairs are read by their attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from transmix.config.run_id import RunId
from transmix.config.study import PAIRS_SEED
from transmix.reporting.stats import t_interval

STORED = ("gap_mean", "correlation", "attn_below_area")  # the statistics `transmix evaluate` keeps per run
LABEL_HISTORY = ("lam_gap_mean", "lam_area_mean", "lam_attn_mean")  # per-epoch means over the CutMix batches


def shown_run(ours: pd.DataFrame, run_id: str = "") -> str:
    """The run whose pairs a page shows: ``run_id``, or else the seed-0 TransMix run of the first model.

    Raises:
        ValueError: the study has no TransMix main run.
    """
    main = ours[(ours.ablation == "") & (ours.method == "transmix")]
    if main.empty:
        raise ValueError(f"study {ours.study.iloc[0]!r} has no TransMix runs")
    if run_id:
        return run_id
    first = main.sort_values(["seed"]).model.iloc[0]
    return main[(main.model == first)].sort_values("seed").run_id.iloc[0]


def twin(run_id: str, method: str = "deit") -> str:
    """The run of the same model, seed and point trained with ``method``: the same pairs through other weights."""
    return str(RunId.parse(run_id).with_method(method))


def pair_frame(pairs: Iterable[Any]) -> pd.DataFrame:
    """``lam_area`` and ``lam_attn`` of each pair, one row a pair."""
    return pd.DataFrame([{"lam_area": p.lam_area, "lam_attn": p.lam_attn} for p in pairs],
                        columns=["lam_area", "lam_attn"])  # fmt: skip


def pairs_table(shown: Sequence[Any], beside: Sequence[Any] = ()) -> pd.DataFrame:
    """The pairs a page shows: both classes, λ by area and by attention, and by the attention of the ``beside``
    run (the deit twin) where there is one."""
    rows = []
    for k, p in enumerate(shown):
        row = {"A": p.class_a, "B": p.class_b, "λ area": round(p.lam_area, 3)}
        row["λ attention (transmix)"] = round(p.lam_attn, 3)
        if beside:
            row["λ attention (deit)"] = round(beside[k].lam_attn, 3)
        rows.append(row)
    return pd.DataFrame(rows)


def token_box(pasted: Any, height: int, width: int) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The pasted box as the label reads it, in pixels: the tokens that count as pasted (more than half of them,
    with ``box_to_grid = area``) on a grid of ``pasted``'s shape over a ``height`` x ``width`` image. The corner
    and the size of the rectangle that covers them, in matplotlib's image coordinates; ``None`` when no token
    counts."""
    inside = np.asarray(pasted) > 0.5
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if not (len(rows) and len(cols)):
        return None
    sh, sw = height / inside.shape[0], width / inside.shape[1]
    corner = (float(cols[0] * sw - 0.5), float(rows[0] * sh - 0.5))
    size = (float((cols[-1] - cols[0] + 1) * sw), float((rows[-1] - rows[0] + 1) * sh))
    return corner, size


def pair_statistics(pairs: pd.DataFrame) -> pd.Series:
    """The statistics of :data:`STORED`, and the median gap and the number of pairs ``n``, from
    :func:`pair_frame`."""
    gap = pairs.lam_attn - pairs.lam_area
    correlation = pairs[["lam_area", "lam_attn"]].corr().iloc[0, 1]
    return pd.Series({"gap_mean": gap.abs().mean(), "gap_median": gap.abs().median(), "correlation": correlation,
                      "attn_below_area": 100 * (gap < 0).mean(), "n": len(pairs)})  # fmt: skip


def stored_statistics(ours: pd.DataFrame, run_id: str, variant: str) -> pd.Series:
    """A run's ``attention_area`` rows for one kind of weights: each statistic, and ``n``; empty where the run has
    none (a table evaluated before they were recorded)."""
    rows = ours[(ours.suite == "attention_area") & (ours.run_id == run_id) & (ours.variant == variant)]
    if rows.empty:
        return pd.Series(dtype=float)
    return pd.concat([rows.set_index("metric").value.astype(float), pd.Series({"n": int(rows.n.iloc[0])})])


def scatter_statistics(ours: pd.DataFrame, run_id: str, variant: str, pairs: pd.DataFrame, seed: int) -> pd.Series:
    """What a page says of the pairs it plots (:func:`pair_statistics`). Where they are the pairs ``transmix
    evaluate`` drew (drawn with :data:`~transmix.config.study.PAIRS_SEED`, as many), the stored statistics are read
    from the table instead; the median is not stored, so it always comes from the pairs."""
    out = pair_statistics(pairs)
    stored = stored_statistics(ours, run_id, variant)
    if seed == PAIRS_SEED and set(STORED) <= set(stored.index) and stored["n"] == out["n"]:
        out.update(stored[list(STORED)])
    return out


def scatter_sentence(stat: pd.Series) -> str:
    """One line under the scatter: the mean gap, the correlation and how often attention is below area."""
    return (f"Over {int(stat['n'])} pairs of one run: mean |λ_attn − λ_area| = {stat['gap_mean']:.3f}; correlation "
            f"{stat['correlation']:.3f}; attention below area in {stat['attn_below_area']:.0f}% of pairs.")  # fmt: skip


def over_runs(ours: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The stored statistics of every main run, per model, method, weights and statistic: ``mean``, ``low``,
    ``high`` and ``n`` seeds; empty where the table has no ``attention_area`` rows."""
    rows = ours[(ours.suite == "attention_area") & (ours.ablation == "")]
    if rows.empty:
        return pd.DataFrame()
    out = rows.groupby(["model", "method", "variant", "metric"])["value"].apply(t_interval, confidence=confidence)
    return out.unstack()[["mean", "low", "high", "n"]].astype({"n": int})


def label_history(ours: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch means of the gap, λ by area and λ by attention of every TransMix main run, ``level`` named
    ``epoch``."""
    rows = ours[(ours.suite == "history") & (ours.method == "transmix") & (ours.ablation == "")]
    return rows[rows.metric.isin(LABEL_HISTORY)].rename(columns={"level": "epoch"})


def conclusions(ours: pd.DataFrame, run_id: str, stat: pd.Series, variant: str,
                confidence: float = 0.95) -> list[str]:  # fmt: skip
    """The page's sentences: the gap on the pairs shown (``stat``, :func:`scatter_statistics`), how it moved
    from the first epoch to the last (mean over the TransMix runs), and the mean gap of each model and method over
    its seeds with its t-interval."""
    lines = [f"In {run_id}, attention and area give labels {stat['gap_mean']:.3f} apart on average (median "
             f"{stat['gap_median']:.3f}) over {int(stat['n'])} pairs."]  # fmt: skip
    history = label_history(ours)
    if not history.empty:
        runs = history[history.metric == "lam_gap_mean"].sort_values("epoch").groupby("run_id").value
        lines.append(f"During training the gap went from {runs.first().mean():.3f} in the first epoch to "
                     f"{runs.last().mean():.3f} in the last (mean over {runs.ngroups} TransMix runs).")  # fmt: skip
    rows = ours[(ours.suite == "attention_area") & (ours.ablation == "") & (ours.variant == variant)]
    for (model, method), part in rows.groupby(["model", "method"]):
        g = t_interval(part[part.metric == "gap_mean"].value, confidence)
        spread = f"{confidence:.0%} t-interval [{g.low:.3f}, {g.high:.3f}]" if g.n > 1 else "one seed, so no interval"
        lines.append(f"{model} {method} ({variant} weights), over {int(g.n)} seed(s): attention and area labels "
                     f"{g['mean']:.3f} apart on average, {spread}.")  # fmt: skip
    return lines
