"""Attention against area as notebook 04 states it: the stored statistics where they describe the pairs shown."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from transmix.config.study import PAIRS_SEED
from transmix.reporting.attention_area import (
    conclusions,
    label_history,
    over_runs,
    pair_frame,
    pair_statistics,
    pairs_table,
    scatter_sentence,
    scatter_statistics,
    shown_run,
    stored_statistics,
    token_box,
    twin,
)

RUN = "m__transmix__s0"
# (λ area, λ attention) of four pairs: gaps -0.1, +0.1, -0.3, 0 -> mean |gap| 0.125, median 0.1, attention below
# area in 2 of 4; Pearson r = 0.115 / sqrt(0.1875 * 0.13) = 0.73659
LAMS = [(0.5, 0.4), (0.6, 0.7), (0.8, 0.5), (0.2, 0.2)]


def _pairs() -> list[SimpleNamespace]:
    return [SimpleNamespace(lam_area=a, lam_attn=b, class_a="Bag", class_b="Coat") for a, b in LAMS]


def _row(run_id: str, metric: str, value: float, suite: str = "attention_area", level: float = float("nan"),
         variant: str = "ema", n: int = 4) -> dict:  # fmt: skip
    model, method, seed = run_id.split("__")
    return dict(study="s", run_id=run_id, model=model, method=method, seed=int(seed[1:]), ablation="", suite=suite,
                level=level, variant=variant, metric=metric, value=value, n=n)  # fmt: skip


def _table() -> pd.DataFrame:
    rows = [_row(RUN, "gap_mean", 0.2), _row(RUN, "correlation", 0.9), _row(RUN, "attn_below_area", 60.0)]
    rows += [_row(f"m__transmix__s{s}", "gap_mean", g) for s, g in ((1, 0.1), (2, 0.3))]  # seeds 0-2: 0.2, 0.1, 0.3
    rows += [_row("m__deit__s0", "gap_mean", 0.4), _row(RUN, "gap_mean", 0.7, variant="raw")]
    # the gap per epoch: run s0 0.1 then 0.3, run s1 0.2 then 0.5; a deit run's history is not TransMix's
    for run, gaps in (("m__transmix__s0", (0.1, 0.3)), ("m__transmix__s1", (0.2, 0.5)), ("m__deit__s0", (9.0, 9.0))):
        rows += [_row(run, "lam_gap_mean", g, "history", epoch, "raw") for epoch, g in enumerate(gaps, start=1)]
    return pd.DataFrame(rows)


def test_the_run_shown_and_its_deit_twin() -> None:
    table = _table()
    assert shown_run(table.iloc[::-1]) == RUN  # the first model's seed-0 run, in any row order
    assert shown_run(table, "m__transmix__s2") == "m__transmix__s2"
    with pytest.raises(ValueError, match="study 's' has no TransMix runs"):
        shown_run(table[table.method == "deit"])
    assert twin("vit_micro_patch4_28__transmix__s0") == "vit_micro_patch4_28__deit__s0"
    assert twin("m__transmix__s3__area_weight=0.0", "cutmix") == "m__cutmix__s3__area_weight=0.0"


def test_statistics_of_the_pairs_by_hand() -> None:
    stat = pair_statistics(pair_frame(_pairs()))
    assert (stat["gap_mean"], stat["gap_median"], stat["attn_below_area"], stat["n"]) == pytest.approx(
        (0.125, 0.1, 50.0, 4)
    )
    assert stat["correlation"] == pytest.approx(0.73659, abs=1e-5)
    assert stat["correlation"] == pytest.approx(np.corrcoef(np.array(LAMS).T)[0, 1])


def test_the_stored_rows_are_read_where_they_describe_the_same_draws() -> None:
    table, pairs = _table(), pair_frame(_pairs())
    assert dict(stored_statistics(table, RUN, "ema")) == {"gap_mean": 0.2, "correlation": 0.9,
                                                          "attn_below_area": 60.0, "n": 4}  # fmt: skip
    assert stored_statistics(table, "m__transmix__s9", "ema").empty
    same = scatter_statistics(table, RUN, "ema", pairs, PAIRS_SEED)
    assert (same["gap_mean"], same["correlation"], same["attn_below_area"]) == (0.2, 0.9, 60.0)
    assert same["gap_median"] == pytest.approx(0.1)  # not stored: from the pairs
    assert scatter_sentence(same) == ("Over 4 pairs of one run: mean |λ_attn − λ_area| = 0.200; correlation 0.900; "
                                      "attention below area in 60% of pairs.")  # fmt: skip
    other_seed = scatter_statistics(table, RUN, "ema", pairs, PAIRS_SEED + 1)
    assert other_seed["gap_mean"] == pytest.approx(0.125)
    fewer = scatter_statistics(table, RUN, "ema", pairs.head(3), PAIRS_SEED)  # 3 pairs: not the 4 stored
    assert fewer["gap_mean"] == pytest.approx(0.5 / 3) and fewer["n"] == 3


def test_every_runs_statistics_over_seeds() -> None:
    over = over_runs(_table())
    transmix = over.loc[("m", "transmix", "ema", "gap_mean")]  # 0.2, 0.1, 0.3: sd 0.1
    assert (transmix["mean"], transmix["n"]) == (pytest.approx(0.2), 3)
    assert transmix["high"] == pytest.approx(0.2 + 4.302653 * 0.1 / 3**0.5, abs=1e-6)
    assert over_runs(_table()[_table().suite == "history"]).empty


def test_the_box_on_the_token_grid_in_pixels() -> None:
    pasted = np.zeros((4, 4))
    pasted[1:3, 2:4] = 1.0
    pasted[0, 0] = 0.4  # less than half of a token pasted: it does not count
    # a 4 x 4 grid over 28 x 28 pixels: 7 pixels a token; matplotlib's pixel centres sit on integers
    assert token_box(pasted, 28, 28) == ((13.5, 6.5), (14.0, 14.0))
    assert token_box(np.zeros((4, 4)), 28, 28) is None


def test_the_table_of_the_pairs_shown() -> None:
    alone = pairs_table(_pairs()[:2])
    assert list(alone.columns) == ["A", "B", "λ area", "λ attention (transmix)"]
    beside = [SimpleNamespace(lam_attn=0.12345), SimpleNamespace(lam_attn=0.5)]
    table = pairs_table(_pairs()[:2], beside)
    assert table["λ attention (deit)"].tolist() == [0.123, 0.5]


def test_conclusions_from_the_pairs_the_history_and_the_stored_rows() -> None:
    table = _table()
    assert label_history(table).run_id.nunique() == 2 and "epoch" in label_history(table)
    stat = pd.Series({"gap_mean": 0.2, "gap_median": 0.1, "n": 4})
    lines = conclusions(table, RUN, stat, "ema")
    assert lines[0] == f"In {RUN}, attention and area give labels 0.200 apart on average (median 0.100) over 4 pairs."
    # first epoch (0.1 + 0.2) / 2, last (0.3 + 0.5) / 2, over the two TransMix runs
    assert lines[1] == ("During training the gap went from 0.150 in the first epoch to 0.400 in the last (mean over 2 "
                        "TransMix runs).")  # fmt: skip
    assert lines[2] == ("m deit (ema weights), over 1 seed(s): attention and area labels 0.400 apart on average, one "
                        "seed, so no interval.")  # fmt: skip
    assert lines[3] == ("m transmix (ema weights), over 3 seed(s): attention and area labels 0.200 apart on average, "
                        "95% t-interval [-0.048, 0.448].")  # fmt: skip
