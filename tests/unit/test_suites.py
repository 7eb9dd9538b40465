"""Robustness as the pages read it: each suite's points over seeds, paired by seed, and one number per suite."""

from __future__ import annotations

import pandas as pd
import pytest

from transmix.reporting.suites import (
    conclusions,
    corruption_means,
    described,
    level_names,
    named_levels,
    over_seeds,
    paired_points,
    per_corruption,
    suite_differences,
    suite_means,
    suite_rows,
)

HALF = 4.302653 / 3**0.5  # t(0.975, 2 df) * sd 1 / sqrt(3): the half-width of [1, 2, 3]'s 95% interval


def _row(method: str, seed: int, value: float, suite: str, level: float, setting: str = "", metric: str = "top1",
         variant: str = "ema", ablation: str = "", n: int = 500) -> dict:  # fmt: skip
    return dict(model="m", method=method, seed=seed, value=value, suite=suite, level=level, setting=setting,
                metric=metric, variant=variant, ablation=ablation, n=n)  # fmt: skip


def _table() -> pd.DataFrame:
    rows = []
    for s in range(3):
        # occlusion: the unchanged image (level 0) is no robustness; at 0.5 transmix is +1, +2, +3 seed by seed
        rows += [_row("deit", s, 90.0, "occlusion", 0.0), _row("transmix", s, 10.0, "occlusion", 0.0)]
        rows += [_row("deit", s, 50.0 + s, "occlusion", 0.5), _row("transmix", s, 51.0 + 2 * s, "occlusion", 0.5)]
        # two attacks, each a suite of its own: fgsm -1 at every seed; pgd 0, 0, +3
        rows += [_row("deit", s, 30.0, "adversarial", 4 / 255, "fgsm"),
                 _row("transmix", s, 29.0, "adversarial", 4 / 255, "fgsm")]  # fmt: skip
        rows += [_row("deit", s, 20.0, "adversarial", 4 / 255, "pgd"),
                 _row("transmix", s, 20.0 + 3 * (s == 2), "adversarial", 4 / 255, "pgd")]  # fmt: skip
        # corruptions: the mean over fog and snow per severity
        corruptions = {"fog": 40.0, "snow": 60.0}
        rows += [_row(m, s, v, "corruption", 1.0, c) for m in ("deit", "transmix") for c, v in corruptions.items()]
        rows += [_row("deit", s, 0.0, "clean", float("nan"))]  # no suite
        rows += [_row("deit", s, 0.0, "occlusion", 0.5, variant="raw")]  # other weights
        rows += [_row("deit", s, 0.0, "occlusion", 0.5, ablation="area_weight=0.0")]  # an ablation point's run
    return suite_rows(pd.DataFrame(rows), "ema")


def test_suite_rows_are_the_main_runs_suites_of_one_kind_of_weights() -> None:
    rows = _table()
    assert set(rows.suite) == {"occlusion", "adversarial", "corruption"}
    assert (rows.variant == "ema").all() and (rows.ablation == "").all() and len(rows) == 3 * 12


def test_one_number_per_suite_leaves_out_the_levels_that_change_nothing() -> None:
    means = suite_means(_table()).set_index(["suite", "method", "seed"]).value
    assert set(means.index.get_level_values("suite")) == {"occlusion", "adversarial/fgsm", "adversarial/pgd",
                                                          "corruption"}  # fmt: skip
    assert means["occlusion", "transmix", 2] == 55.0  # level 0.5 only: the 10.0 at level 0 is not averaged in
    assert means["corruption", "deit", 0] == 50.0  # (40 + 60) / 2


def test_each_suite_paired_by_seed_and_its_sentences() -> None:
    diff = suite_differences(suite_means(_table()), "deit")
    occlusion = diff.loc[("m", "occlusion", "top1")]
    assert occlusion["transmix − deit"] == 2.0 and occlusion["seeds"] == 3 and diff.seeds.dtype == int
    assert (occlusion["low"], occlusion["high"]) == pytest.approx((2 - HALF, 2 + HALF), abs=1e-6)
    assert tuple(diff.loc[("m", "adversarial/fgsm", "top1"), ["low", "high"]]) == (-1.0, -1.0)
    pgd = diff.loc[("m", "adversarial/pgd", "top1")]  # 0, 0, 3: mean 1, sd sqrt(3), half-width t * 1
    assert pgd["transmix − deit"] == 1.0 and pgd["high"] == pytest.approx(1 + 4.302653, abs=1e-6)
    lines = conclusions(diff, "deit")
    assert len(lines) == len(diff) + 1 == 5
    assert "m, adversarial/fgsm top1: transmix − deit is **lower**: by 1.00 points" in lines[0]
    assert "m, occlusion top1: transmix − deit: +2.00 points, **no difference shown**" in lines[3]
    assert lines[-1] == "4 comparisons at 95%: about 0.2 would exclude zero by chance alone."
    assert conclusions(suite_differences(suite_means(_table().iloc[:0]), "deit"), "deit") == [
        "No paired transmix − deit difference in this study."
    ]


def test_points_over_seeds_and_paired_against_a_missing_method() -> None:
    occlusion = _table()[(_table().suite == "occlusion") & (_table().level == 0.5)]
    stat = over_seeds(occlusion, ["model", "method"]).loc[("m", "deit")]  # 50, 51, 52
    assert (stat["mean"], stat["seeds"]) == (51.0, 3) and stat["high"] == pytest.approx(51 + HALF, abs=1e-6)
    assert paired_points(occlusion, ["model", "level"], "cutmix").empty
    table = paired_points(occlusion, ["model", "level"], "deit")
    assert list(named_levels(table, "occlusion").index) == [("m", "50%")]
    assert named_levels(table.iloc[:0], "occlusion").empty


def test_levels_read_as_the_protocol_states_them() -> None:
    assert level_names("adversarial", [0.0, 2 / 255, 8 / 255]) == ["0/255", "2/255", "8/255"]
    assert level_names("occlusion", [0.0, 0.25, 0.5]) == ["0%", "25%", "50%"]
    assert level_names("shuffle", [1.0, 4.0]) == ["1", "4"]


def test_corruptions_per_severity_and_per_corruption() -> None:
    corruption = _table()[_table().suite == "corruption"]
    means = corruption_means(corruption)
    assert len(means) == 2 * 3 and (means.value == 50.0).all() and (means.n == 500).all()
    assert per_corruption(corruption).loc["snow", "transmix"] == 60.0
    described_ = described(means.assign(n=[500, 500, 500, 1000, 1000, None]))
    assert described_ == "mean ± 95% t-interval over 3 seeds, 500, 1000 images per point"
