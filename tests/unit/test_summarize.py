"""`transmix summarize`: a study's headline tables from its table alone, and docs/studies.md shows them as printed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from transmix.records.results import SchemaError, paper, read
from transmix.reporting.pages import summarize

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("study", ["default", "reference", "small_data", "distillation"])
def test_the_studies_page_shows_each_committed_study_as_summarized(study) -> None:
    assert summarize(read(REPO / f"results/{study}/results.csv")) in (REPO / "docs/studies.md").read_text()


def _row(method: str, seed: int, value: float, suite: str = "clean", level: float = float("nan"), ablation: str = ""):
    return dict(source="ours", model="m", method=method, seed=seed, value=value, suite=suite, level=level,
                ablation=ablation, variant="ema", metric="top1", setting="", n=100)  # fmt: skip


def test_the_numbers_by_hand() -> None:
    # transmix - deit per seed: +1, +2, +3 -> mean +2, sd 1, t(0.975, 2) = 4.303 -> half width 2.48
    rows = [_row("deit", s, 70.0) for s in range(3)] + [_row("transmix", s, 71.0 + s) for s in range(3)]
    # occlusion: the unchanged image (level 0) is left out of the suite's mean; only level 0.5 counts
    rows += [_row(m, s, 50.0, "occlusion", 0.0) for m in ("deit", "transmix") for s in range(3)]
    rows += [_row("deit", s, 40.0, "occlusion", 0.5) for s in range(3)]
    rows += [_row("transmix", s, 41.0, "occlusion", 0.5) for s in range(3)]
    rows += [_row("transmix", s, 69.0 + s, ablation="area_weight=0.0") for s in range(2)]  # changes -2, -2
    text = summarize(pd.DataFrame(rows))
    assert "| m | ema | 70.00 ± 0.00 | 72.00 ± 1.00 | +2.00 [−0.48, +4.48] | 3 of 3 |" in text
    assert "| m | +1.00 [+1.00, +1.00] |" in text  # occlusion: the unchanged level did not dilute it
    assert "| area_weight=0.0 | m | transmix | 2 | −2.00 [−2.00, −2.00] |" in text
    assert "Every method" not in text  # two methods: the first table says it all


def test_every_method_of_a_model_that_trained_more_than_two() -> None:
    # none - deit per seed: -1, -1, -4 -> mean -2, sd 1.73, t(0.975, 2) = 4.303 -> half width 4.30
    values = {"deit": [70.0, 71.0, 72.0], "transmix": [71.0, 71.0, 72.0], "none": [69.0, 70.0, 68.0]}
    rows = [_row(method, s, v) for method, seeds in values.items() for s, v in enumerate(seeds)]
    rows += [_row("mixup", 0, 75.0)]  # one seed: no interval, still listed
    lines = summarize(pd.DataFrame(rows)).split("Every method", 1)[1].splitlines()
    table = [line for line in lines if line.startswith("| m |")]
    assert table == [
        "| m | mixup | 1 | 75.00 | +5.00 (one seed: no interval) |",
        "| m | transmix | 3 | 71.33 ± 0.58 | +0.33 [−1.10, +1.77] |",
        "| m | deit | 3 | 71.00 ± 1.00 | (baseline) |",
        "| m | none | 3 | 69.00 ± 1.00 | −2.00 [−6.30, +2.30] |",
    ]


def test_a_table_without_measured_rows_is_refused() -> None:
    with pytest.raises(SchemaError, match="no measured top-1"):
        summarize(paper())
