"""The prepared GPU check in its CPU mode, end to end, so that it works the day a GPU is there."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_the_check_runs_every_step_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "transmix.tools.gpu_check", str(out), "--cpu"], cwd=REPO,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary[step]["ok"] for step in ("environment", "tests", "bench", "loader", "train")), summary
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["environment.json", "summary.json", "tests.log", "bench.csv", "bench.txt", "loader.csv", "train.json",
         "train.log"]
    ), "at most eight files, no folders: what a device run can bring back"  # fmt: skip
    loader = list(csv.DictReader((out / "loader.csv").open()))
    assert [r["workers"] for r in loader] == ["0", "1"] and all(float(r["images_per_second"]) > 0 for r in loader)
    assert "2 passed" in summary["tests"]["result"]
    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert [r["column"] for r in rows] == ["deit", "transmix", "transmix-explicit", "timm"]
    assert all(float(r["vs_deit_low"]) <= float(r["vs_deit"]) <= float(r["vs_deit_high"]) for r in rows)
    train = summary["train"]
    assert train["first_exit"] == 143 and train["stopped_at"] == train["resumed_at"]
    assert int(train["stopped_at"][1]) % 3 == 0, "a SIGTERM is saved at a sync step (sync_every=3)"
    assert train["train_loss"][-1] < train["train_loss"][0]
