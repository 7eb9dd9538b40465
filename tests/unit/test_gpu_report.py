"""docs/gpu.md shows each committed GPU check as `python -m transmix.tools.gpu_check --report` prints it."""

from __future__ import annotations

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
