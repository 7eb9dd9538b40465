"""The notebooks' statistics, against scipy and against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from transmix.reporting.stats import interval_ends, load_study, paired, t_interval


def test_t_interval_by_hand_and_against_scipy() -> None:
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2 df) = 4.302653: half-width 4.302653 / sqrt(3) = 2.484138
    ci = t_interval([1.0, 2.0, 3.0])
    assert (ci["mean"], ci["n"]) == (2.0, 3)
    assert ci["half"] == pytest.approx(2.484138, abs=1e-6)
    assert (ci["low"], ci["high"]) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    values = np.random.default_rng(0).normal(size=7)
    low, high = stats.ttest_1samp(values, 0.0).confidence_interval(0.9)
    ci = t_interval(values, confidence=0.9)
    assert (ci["low"], ci["high"]) == pytest.approx((low, high), abs=1e-12)
    one = t_interval([5.0, float("nan")])  # a missing value is dropped; one value has no interval
    assert one["n"] == 1 and one["mean"] == 5.0 and math.isnan(one["half"])


def test_interval_ends_are_the_t_intervals_for_seaborn() -> None:
    # seaborn's errorbar= gets the values at one x; the band is then the tables' interval
    assert interval_ends()([1.0, 2.0, 3.0]) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    low, high = interval_ends(0.9)([1.0, 2.0, 3.0])  # t(0.95, 2 df) = 2.919986: half-width 1.685854
    assert (low, high) == pytest.approx((2 - 1.685854, 2 + 1.685854), abs=1e-6)


def test_paired_difference_takes_each_seed_against_its_own() -> None:
    # Seeds differ a lot (+-10) but transmix is +1, +2, +3 over deit seed by seed: the paired interval is that of
    # [1, 2, 3], far narrower than an unpaired one would be.
    rows = [{"model": "m", "method": method, "seed": seed, "value": 10.0 * seed + (seed + 1) * (method == "transmix")}
            for seed in range(3) for method in ("deit", "transmix")]  # fmt: skip
    rows.append({"model": "m", "method": "deit", "seed": 3, "value": 99.0})  # no transmix partner: left out
    out = paired(pd.DataFrame(rows), ["model"])
    assert out.loc["m", "mean"] == 2.0 and out.loc["m", "n"] == 3 and out.loc["m", "wins"] == 3
    assert out.loc["m", "half"] == pytest.approx(t_interval([1.0, 2.0, 3.0])["half"])
    assert paired(pd.DataFrame(rows), ["model"], treatment="cutmix").empty


def test_load_study_splits_ours_from_the_published_rows(tmp_path) -> None:
    from transmix.records.results import paper, write

    ours = paper().head(1).assign(source="ours", reference="", study="s", run_id="m__deit__s0", seed=0)
    write(pd.concat([ours, paper()]), tmp_path / "r.csv")
    measured, published = load_study(tmp_path / "r.csv", "s")
    assert len(measured) == 1 and (published.source == "paper").all() and len(published) == len(paper())
    with pytest.raises(ValueError, match="no measured rows of study 'other'"):
        load_study(tmp_path / "r.csv", "other")
