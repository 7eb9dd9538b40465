"""Notebook 01's numbers: top-1 per method, each method against the baseline by seed, and the ladder of scales."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from transmix.reporting.main_results import (
    best_epochs,
    conclusions,
    differences,
    interval_columns,
    ladder,
    ladder_labels,
    mixing_pays,
    published,
    rung,
    spread,
    training_images,
)

HALF = 4.302653 / 3**0.5  # the half-width of the 95% t-interval of [1, 2, 3] (t(0.975, 2 df), sd 1)
TOP1 = {"deit": [70.0, 71.0, 72.0], "transmix": [71.0, 73.0, 75.0], "none": [69.0, 70.0, 71.0]}


def _top1() -> pd.DataFrame:
    return pd.DataFrame([dict(model="m", variant="ema", method=m, seed=s, value=v, dataset="fashion_mnist", epochs=10,
                              suite="clean", metric="top1", ablation="", level=math.nan)
                         for m, values in TOP1.items() for s, v in enumerate(values)])  # fmt: skip


def _paper() -> pd.DataFrame:
    rows = [
        ("transmix-paper", "DeiT-S", "deit", 300, 79.8, "imagenet"),
        ("transmix-paper", "DeiT-S", "transmix", 300, 80.7, "imagenet"),
        ("transmix-paper", "PVT-T", "transmix", 300, 75.5, "imagenet"),  # one method: no gain
        ("openmixup", "DeiT-S", "deit", 600, 70.0, "cifar100"),
        ("openmixup", "DeiT-S", "transmix", 600, 69.5, "cifar100"),
    ]
    return pd.DataFrame([dict(run_id=f"{source}__{model}__{method}__e{epochs}", source="paper", model=model,
                              method=method, epochs=epochs, value=value, dataset=dataset, suite="clean",
                              metric="top1", reference=f"{source}: table 1")
                         for source, model, method, epochs, value, dataset in rows])  # fmt: skip


def test_top1_per_method_and_the_best_epoch() -> None:
    stat = spread(_top1()).loc[("m", "ema", "transmix")]
    assert (stat["mean"], stat["std"], stat["seeds"]) == (73.0, 2.0, 3)
    assert best_epochs(_top1()).empty  # no best_epoch rows
    best = _top1().assign(suite="best_epoch", level=[7.0, 9.0, 8.0] * 3)
    assert tuple(best_epochs(best).loc[("m", "ema", "deit"), ["mean", "seeds", "mean_epoch"]]) == (71.0, 3, 8.0)


def test_each_method_against_the_baseline_by_seed() -> None:
    out = differences(_top1(), "deit").set_index("method")
    low, high = interval_columns(0.95)
    assert (low, high) == ("ci95_low", "ci95_high") and interval_columns(0.9) == ("ci90_low", "ci90_high")
    assert list(out.index) == ["transmix", "none"]  # the order every page lists methods in
    transmix = out.loc["transmix"]  # +1, +2, +3
    assert (transmix.diff_mean, transmix.seeds, transmix.wins, transmix.baseline) == (2.0, 3, 3, "deit")
    assert (transmix[low], transmix[high]) == pytest.approx((2 - HALF, 2 + HALF), abs=1e-6)
    assert tuple(out.loc["none", ["diff_mean", low, high, "wins"]]) == (-1.0, -1.0, -1.0, 0)
    assert differences(_top1()[_top1().method == "deit"], "deit").empty  # one method: nothing to pair
    assert differences(_top1(), "cutmix").empty  # no baseline runs


def test_the_papers_table_and_the_ladder_of_scales() -> None:
    table = published(_paper())
    assert list(table.index) == ["DeiT-S", "PVT-T"]  # the paper's own rows only
    assert table.loc["DeiT-S", "gain"] == pytest.approx(0.9) and math.isnan(table.loc["PVT-T", "gain"])
    rungs = ladder(_paper(), differences(_top1(), "deit"), _top1(), "ema", "results/s/results.csv")
    assert rungs.source.tolist() == ["this study", "transmix-paper", "openmixup"]
    ours = rungs.iloc[0]
    assert (ours.dataset, ours.model, ours.epochs, ours.difference, ours.seeds) == ("fashion_mnist", "m", 10, 2.0, 3)
    assert ours.reference == "results/s/results.csv, ema weights" and ours.low == pytest.approx(2 - HALF, abs=1e-6)
    assert rungs.difference.iloc[1:].tolist() == pytest.approx([0.9, -0.5]) and rungs.low.iloc[1:].isna().all()
    assert len(ladder(_paper(), pd.DataFrame(), _top1(), "ema", "t.csv")) == 2  # one method: the published alone


def test_the_sentences() -> None:
    methods = ["deit", "transmix", "none"]
    lines = conclusions(differences(_top1(), "deit"), _paper(), methods, "ema")
    assert lines[0].startswith("m, transmix − deit (ema weights): +2.00 points, **no difference shown**")
    assert lines[1] == ("m, none − deit (ema weights) is **lower**: by 1.00 points (95% t-interval over 3 seeds "
                        "[-1.00, -1.00], excluding zero).")  # fmt: skip
    assert lines[2] == ("Published TransMix − DeiT differences (2 single runs, cifar100, imagenet) range from -0.50 to "
                        "+0.90 points.")  # fmt: skip
    alone = conclusions(pd.DataFrame(), _paper(), ["transmix"], "ema")
    assert alone[0] == "One method (transmix): nothing is compared."


def test_another_study_is_a_rung_labelled_by_its_data_images_and_epochs(tmp_path) -> None:
    """transmix − deit of another study's table sits beside this study's, with the training images its config
    gives (train_subset, or Fashion-MNIST's whole 60,000)."""
    config = tmp_path / "other.yaml"
    config.write_text("train:\n  train_subset: 500\noverrides:\n  big: {train_subset: 0}\n")
    assert training_images(config, "m") == 500 and training_images(config, "big") == 60_000
    other = _top1().assign(source="ours", epochs=400)
    rows = rung(other, "other", config, "ema")
    assert rows.source.tolist() == ["study other"] and rows.train_images.tolist() == [500]
    assert rows.difference.iloc[0] == pytest.approx(2.0)  # transmix − deit per seed: 1, 2, 3
    assert (rows.low.iloc[0], rows.high.iloc[0]) == pytest.approx((2 - HALF, 2 + HALF))
    top1 = _top1()
    ladder_rows = ladder(_paper(), differences(top1, "deit"), top1, "ema", "t.csv", train_images=16_000, rungs=[rows])
    assert ladder_rows.source.tolist()[:2] == ["this study", "study other"]
    assert ladder_labels(ladder_rows).tolist()[:3] == [
        "this study: fashion_mnist, 16,000 images, m, 10 ep",
        "study other: fashion_mnist, 500 images, m, 400 ep",
        "transmix-paper: imagenet, DeiT-S, 300 ep",
    ]
    assert rung(other[other.method != "transmix"], "other", config, "ema").empty  # no transmix: no rung


def test_whether_mixing_pays_per_schedule_and_seed() -> None:
    rows = [
        dict(
            source="ours",
            model="vit",
            ablation="",
            method=m,
            epochs=e,
            seed=s,
            suite="clean",
            metric="top1",
            variant="ema",
            value=v,
            level=math.nan,
        )
        for m, e, s, v in (
            ("none", 400, 1, 74.9),
            ("deit", 400, 1, 76.5),
            ("none", 300, 0, 74.4),
            ("deit", 300, 0, 76.3),
        )
    ]
    rows += [
        dict(
            source="ours",
            model="vit",
            ablation="",
            method=m,
            epochs=400,
            seed=1,
            suite="history",
            metric="train_loss",
            variant="raw",
            value=v,
            level=level,
        )
        for m, level, v in (("none", 1, 2.3), ("none", 400, 0.57), ("deit", 400, 1.39), ("deit", 1, 2.3))
    ]
    # Two settings with the same schedule and seed stay apart, and so do two models; an ablation point only deit ran
    # is left out, and so is a model only deit ran (a study's other families: their deit is not the ViT's baseline).
    rows += [
        dict(rows[0], ablation=point, model=model, method=m, value=v)
        for point, model, m, v in (
            ("scout=b", "vit", "none", 80.0),
            ("scout=b", "vit", "deit", 75.0),
            ("switch_prob=0.8", "vit", "deit", 1),
            ("", "xcit", "deit", 2),
        )
    ]
    table = mixing_pays(pd.DataFrame(rows)).set_index(["ablation", "epochs", "seed"])  # fmt: skip
    assert table.loc[("", 400, 1), "deit − none"] == pytest.approx(1.6) and table.loc[("", 300, 0), "none"] == 74.4
    assert table.loc[("", 400, 1), ["final loss none", "final loss deit"]].tolist() == [0.57, 1.39]
    assert math.isnan(table.loc[("", 300, 0), "final loss none"])  # no history rows: no loss
    assert table.loc[("scout=b", 400, 1), "deit − none"] == pytest.approx(-5.0)
    assert len(table) == 3 and set(table.model) == {"vit"}
