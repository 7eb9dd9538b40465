"""docs/gpu.md shows each committed GPU check as `python -m transmix.tools.gpu_check --report` prints it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from transmix.tools.gpu_check import report

REPO = Path(__file__).resolve().parents[2]
FOLDERS = sorted((REPO / "results/gpu").glob("*/summary.json"))


@pytest.mark.parametrize("summary", FOLDERS, ids=[f.parent.name for f in FOLDERS])
def test_the_gpu_page_shows_each_committed_gpu_check_as_reported(summary) -> None:
    text = report(summary.parent)
    assert "| eager bf16 | transmix |" in text and "Training (" in text
    assert text in (REPO / "docs/gpu.md").read_text()


def test_there_is_a_committed_gpu_check() -> None:
    assert FOLDERS, "results/gpu/<device>/ holds no GPU check"


def test_the_report_shows_the_profile_and_the_peak_table_of_a_folder_that_has_them(tmp_path) -> None:
    from transmix.tools.bench import write_csv
    from transmix.tools.peak import PeakRow
    from transmix.tools.profile_step import ProfileRow

    committed = REPO / "results/gpu/nvidia-h200"
    for name in ("summary.json", "bench.csv", "loader.csv"):
        shutil.copy(committed / name, tmp_path / name)
    write_csv(
        [
            ProfileRow("aten::bmm", 0, 10, 0.0, 0.25, 0.25, 10, "cuda"),
            ProfileRow("aten::mm", 640, 640, 12.0, 11.9, -0.1, 10, "cuda"),
        ],
        tmp_path / "profile.csv",
    )
    nan = math.nan
    write_csv([PeakRow("compile default, fused AdamW", 1024, "ok", 41.0, 120.0, 8533.3, 8500.0, 8566.6, 40000.0,
                       235.5, 0.238, 5, "NVIDIA H100", "2.11.0"),
               PeakRow("compile max-autotune (CUDA graphs)", 1024, "not run: budget", nan, nan, nan, nan, nan, nan, nan,
                       nan, 5, "NVIDIA H100", "2.11.0")], tmp_path / "peak.csv")  # fmt: skip
    text = report(tmp_path)
    assert "cuda self time in ms per step over 10 steps, the 2 operators" in text
    assert "| `aten::bmm` | 0 | 10 | 0.000 | 0.250 | +0.250 |" in text and "| `aten::mm` | 640 | 640 |" in text
    assert "| compile default, fused AdamW | 1024 | 41.0 | 120.00 | 8533 [8500, 8567] | 235.5 | 23.8% | ok |" in text
    assert "| compile max-autotune (CUDA graphs) | 1024 | | | | | | not run: budget |" in text
    before = [line for line in report(committed).splitlines() if line]
    assert [line for line in text.splitlines() if line in before] == before, "the rest of the report is unchanged"
