"""The training history as notebook 05 reads it: each run's last epoch, the speed, and the sentences."""

from __future__ import annotations

import pandas as pd
import pytest

from transmix.reporting.dynamics import conclusions, history, last_epoch, last_epoch_table, throughput


def _row(method: str, seed: int, epoch: int, metric: str, value: float, variant: str = "raw",
         ablation: str = "") -> dict:  # fmt: skip
    return dict(run_id=f"m__{method}__s{seed}", model="m", method=method, seed=seed, suite="history", level=epoch,
                metric=metric, variant=variant, value=value, ablation=ablation)  # fmt: skip


def _table() -> pd.DataFrame:
    rows = []
    final = {"deit": [80.0, 81.0, 82.0], "transmix": [81.0, 83.0, 85.0]}  # last-epoch EMA top-1: +1, +2, +3
    for method, values in final.items():
        for seed, value in enumerate(values):
            epochs = 3 if (method, seed) == ("deit", 0) else 2  # one run trained longer: its own last epoch counts
            for epoch in range(1, epochs + 1):
                last = epoch == epochs
                rows.append(_row(method, seed, epoch, "train_loss", 2.0 / epoch))
                rows.append(_row(method, seed, epoch, "val_top1", value if last else 50.0, "ema"))
                rows.append(_row(method, seed, epoch, "images_per_second", 100.0 * (seed + 1)))
    rows.append(_row("deit", 0, 1, "train_loss", 99.0, ablation="area_weight=0.0"))  # a point's run: not shown
    return pd.DataFrame(rows)


def test_the_main_runs_history_by_epoch() -> None:
    hist = history(_table())
    assert "epoch" in hist and "level" not in hist and (hist.ablation == "").all()
    last = last_epoch(hist)
    assert last.groupby("run_id").epoch.first().to_dict() == {"m__deit__s0": 3, "m__deit__s1": 2, "m__deit__s2": 2,
                                                              "m__transmix__s0": 2, "m__transmix__s1": 2,
                                                              "m__transmix__s2": 2}  # fmt: skip


def test_the_last_epochs_table_and_the_speed() -> None:
    hist = history(_table())
    table = last_epoch_table(hist)
    assert table.loc[("m", "transmix"), ("mean", "val_top1", "ema")] == 83.0
    assert table.loc[("m", "transmix"), ("std", "val_top1", "ema")] == 2.0
    assert table.loc[("m", "deit"), ("mean", "train_loss", "raw")] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert throughput(hist).loc["m", "deit"] == 200.0  # the median over epochs: 100, 100, 100, 200, 200, 300, 300


def test_the_sentences() -> None:
    lines = conclusions(history(_table()))
    # transmix - deit per seed +1, +2, +3: mean 2, half-width t(0.975, 2) / sqrt(3) = 2.48
    assert lines[0] == ("m, last-epoch validation top-1 (EMA): transmix − deit: +2.00 points, **no difference shown** "
                        "(95% t-interval over 3 seeds [-0.48, +4.48] includes zero).")  # fmt: skip
    # the loss is 2 / epoch: 2.0 at the first epoch; the last epoch (3) has one run, at 2 / 3
    assert lines[1] == "Training loss, mean over runs: 2.000 in the first epoch, 0.667 in the last."
    assert len(conclusions(history(_table()), baseline="cutmix")) == 1  # nothing to pair: the loss alone
