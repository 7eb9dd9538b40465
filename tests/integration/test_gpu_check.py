"""The prepared GPU check in its CPU mode, end to end, so that it works the day a GPU is there."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from transmix.tools.gpu_check import report

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_the_check_runs_every_step_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "transmix.tools.gpu_check", str(out), "--cpu"], cwd=REPO,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    steps = ("environment", "tests", "bench", "profile", "loader", "fed", "train", "peak")
    assert [step for step in summary if step != "mode"] == list(steps), "the steps, in their order"
    assert all(summary[step]["ok"] for step in steps), summary
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["environment.json", "summary.json", "tests.log", "bench.csv", "bench.txt", "profile.csv", "peak.csv",
         "loader.csv", "fed.csv", "train.json", "train.log"]
    ), "at most twelve files, no folders: what a device run can bring back"  # fmt: skip
    profile = list(csv.DictReader((out / "profile.csv").open()))
    assert len(profile) == 15 and {r["device_time"] for r in profile} == {"cpu"} and profile[0]["steps"] == "10"
    gaps = [abs(float(r["difference_ms"])) for r in profile]
    assert gaps == sorted(gaps, reverse=True), "the largest differences in self time first"
    assert all(float(r["difference_ms"]) == pytest.approx(float(r["self_ms_transmix"]) - float(r["self_ms_deit"]),
                                                          abs=1e-6) for r in profile)  # fmt: skip
    assert any(int(r["calls_transmix"]) > int(r["calls_deit"]) for r in profile), "the hooks and the label add ops"
    assert "aten::_softmax" in summary["profile"]["only_in_transmix"], "the class token's attention row"
    assert "cutmix" in summary["profile"]["modes"], "a profiled step that TransMix re-weights"
    peak = list(csv.DictReader((out / "peak.csv").open()))
    assert [(r["variant"], r["batch_size"], r["status"]) for r in peak] == [
        ("eager, foreach AdamW", "8", "ok"), ("eager, fused AdamW", "16", "ok")]  # fmt: skip
    assert all(float(r["images_per_second"]) > 0 and float(r["ms_per_step"]) > 0 for r in peak)
    assert all(float(r["low"]) <= float(r["images_per_second"]) <= float(r["high"]) for r in peak)
    text = report(out)
    assert "| `aten::" in text and "| eager, fused AdamW | 16 |" in text and text.count("\n| ") >= 4 + 15 + 2
    loader = list(csv.DictReader((out / "loader.csv").open()))
    assert [(r["loader"], r["workers"]) for r in loader] == [("pil", "0"), ("pil", "1"), ("device", "0"),
                                                               ("device", "1")]  # fmt: skip
    assert all(float(r["images_per_second"]) > 0 for r in loader)
    fed = list(csv.DictReader((out / "fed.csv").open()))
    assert [r["source"] for r in fed] == ["synthetic", "pil", "device"] and fed[0]["vs_synthetic"] == "1.0"
    assert all(float(r["images_per_second"]) > 0 and float(r["vs_synthetic"]) > 0 for r in fed)
    assert "Training fed from JPEG folders (vit_micro_patch4_28, eager, batch 16)" in text
    assert "Loader alone (device), images/s by workers" in text
    assert "2 passed" in summary["tests"]["result"]
    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert [r["column"] for r in rows] == ["deit", "transmix", "transmix-explicit", "timm"]
    assert all(float(r["vs_deit_low"]) <= float(r["vs_deit"]) <= float(r["vs_deit_high"]) for r in rows)
    train = summary["train"]
    assert train["first_exit"] == 143 and train["stopped_at"] == train["resumed_at"]
    assert int(train["stopped_at"][1]) % 3 == 0, "a SIGTERM is saved at a sync step (sync_every=3)"
    assert train["train_loss"][-1] < train["train_loss"][0]
