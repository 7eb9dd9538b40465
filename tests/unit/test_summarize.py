"""`transmix summarize`: a study's headline tables from its table alone, and the README shows them as printed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from transmix.report import summarize
from transmix.results import SchemaError, paper, read

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("study", ["default", "reference", "distillation"])
def test_the_readme_shows_each_committed_study_as_summarized(study) -> None:
    assert summarize(read(REPO / f"results/{study}/results.csv")) in (REPO / "README.md").read_text()


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


def test_a_table_without_measured_rows_is_refused() -> None:
    with pytest.raises(SchemaError, match="no measured top-1"):
        summarize(paper())
