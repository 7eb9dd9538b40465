"""Ablation points against the study's own runs, seed by seed, and the TransMix gain along the axes that train both."""

from __future__ import annotations

import pandas as pd
import pytest

from transmix.reporting.ablations import (
    axes,
    axis_table,
    changes,
    conclusions,
    gains,
    is_numeric,
    tick_label,
    top1,
    value_order,
)

STUDY = {"area_weight": 0.5, "switch_prob": 0.5}  # the study's own value of each axis


def _row(method: str, seed: int, value: float, ablation: str = "", variant: str = "ema") -> dict:
    return dict(model="m", method=method, seed=seed, value=value, ablation=ablation, variant=variant, suite="clean",
                metric="top1")  # fmt: skip


def _table() -> pd.DataFrame:
    own = {"deit": [70.0, 71.0, 72.0], "transmix": [71.0, 71.0, 72.0]}  # the study's own runs
    rows = [_row(m, s, v) for m, values in own.items() for s, v in enumerate(values)]
    rows += [_row("transmix", s, v, "area_weight=0.0") for s, v in enumerate([69.0, 70.0])]  # changes -2, -1
    rows += [_row("deit", s, v, "switch_prob=0.8") for s, v in enumerate([71.0, 72.0, 73.0])]  # changes +1 each
    rows += [_row("transmix", s, v, "switch_prob=0.8") for s, v in enumerate([73.0, 73.0, 74.0])]  # +2 each
    rows += [_row("transmix", 0, 10.0, "kd=alone"), _row("transmix", 0, 10.0, variant="raw")]  # neither is shown
    return top1(pd.DataFrame(rows), "ema")


def test_top1_names_each_points_axis_and_value_and_leaves_out_students() -> None:
    rows = _table()
    assert len(rows) == 6 + 2 + 3 + 3 and not rows.ablation.str.startswith("kd=").any()
    point = rows[rows.ablation == "area_weight=0.0"].iloc[0]
    assert (point.axis, point.value_label) == ("area_weight", "0.0")
    own = rows[rows.ablation == ""]
    assert (own.axis == "").all() and own.value_label.isna().all()
    assert axes(rows) == ["area_weight", "switch_prob"]


def test_changes_are_taken_against_the_same_seed_of_the_studys_run() -> None:
    out = changes(_table()).set_index(["point", "model", "method"])
    assert list(out.index) == [("area_weight=0.0", "m", "transmix"), ("switch_prob=0.8", "m", "deit"),
                               ("switch_prob=0.8", "m", "transmix")]  # fmt: skip
    area = out.loc[("area_weight=0.0", "m", "transmix")]  # -2, -1: mean -1.5, sd 0.7071, t(0.975, 1) = 12.706205
    assert (area["mean"], area["n"]) == (-1.5, 2) and out.n.dtype == int
    assert area["half"] == pytest.approx(12.706205 * 0.5**0.5 / 2**0.5, abs=1e-6)
    assert tuple(out.loc[("switch_prob=0.8", "m", "transmix"), ["mean", "low", "high"]]) == (2.0, 2.0, 2.0)
    assert changes(_table()[_table().ablation == ""]).empty


def test_the_gain_at_each_value_of_an_axis_that_trains_both() -> None:
    out = gains(_table(), STUDY).set_index(["axis", "model", "value_label"])
    assert list(out.index) == [("switch_prob", "m", "0.5 (study)"), ("switch_prob", "m", "0.8")]  # area: transmix
    study = out.loc[("switch_prob", "m", "0.5 (study)")]  # 71-70, 71-71, 72-72
    assert (study["mean"], study["wins"]) == pytest.approx((1 / 3, 1))
    point = out.loc[("switch_prob", "m", "0.8")]  # 73-71, 73-72, 74-73: mean 4/3, sd 0.57735
    assert (point["mean"], point["wins"]) == pytest.approx((4 / 3, 3))
    assert point["half"] == pytest.approx(4.302653 * 0.57735027 / 3**0.5, abs=1e-6)
    assert gains(_table()[_table().method == "transmix"], STUDY).empty


def test_an_axis_table_places_the_studys_runs_at_their_value() -> None:
    table = axis_table(_table(), "area_weight", STUDY)
    assert list(table.index) == [("m", "transmix", "0.0"), ("m", "transmix", "0.5 (study)")]  # no deit: not trained
    assert table.loc[("m", "transmix", "0.0"), "mean"] == 69.5
    assert table.loc[("m", "transmix", "0.5 (study)"), "mean"] == pytest.approx(214 / 3)
    assert list(axis_table(_table(), "area_weight", {}).index.get_level_values(2)) == ["0.0", "study (study)"]


def test_values_in_numeric_order_then_the_rest() -> None:
    assert sorted(["max", "1 (study)", "0.5", "-4"], key=value_order) == ["-4", "0.5", "1 (study)", "max"]
    assert is_numeric(["-1 (study)", "0.25"]) and not is_numeric(["mean", "max"])
    assert tick_label("area_weight", "0.0") == "0.0\nattention only"
    assert tick_label("switch_prob", "0.8") == "0.8"


def test_conclusions_leave_the_studys_own_value_to_the_main_page() -> None:
    table = _table()
    lines = conclusions(changes(table), gains(table, STUDY))
    assert len(lines) == 3 + 1 + 1  # three changes, the gain at switch_prob=0.8, and what chance would give
    assert lines[2] == ("switch_prob=0.8, m transmix: change against the study's runs is **higher**: by 2.00 points "
                        "(95% t-interval over 3 seeds [+2.00, +2.00], excluding zero).")  # fmt: skip
    assert lines[3].startswith("switch_prob=0.8, m: transmix − deit: +1.33 points, **no difference shown**")
    assert not any("(study)" in line for line in lines)
    assert lines[-1] == "4 comparisons at 95%: about 0.2 would exclude zero by chance alone."
