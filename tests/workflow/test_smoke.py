"""The Snakemake pipeline for real: the smoke study end to end (every rule, every notebook, the report)."""

from __future__ import annotations

import json

import pytest

from transmix.results import read

pytestmark = pytest.mark.slow  # starts Snakemake


def test_smoke_study_end_to_end(pipeline, snakemake) -> None:
    cwd = pipeline
    result = snakemake(cwd, "--cores", "2", "--configfile", "workflow/config/smoke.yaml")
    assert result.returncode == 0, result.stderr[-3000:]

    table = read(cwd / "results/smoke/results.csv")
    points = table[(table.source == "ours") & (table.ablation != "") & (table.suite == "clean")]
    assert points.groupby("ablation").run_id.nunique().to_dict() == {
        "area_weight=0.0": 1, "attn_heads=max": 1, "switch_prob=0.8": 2}  # fmt: skip
    history = table[(table.suite == "history") & (table.metric == "lam_gap_mean")]
    assert set(history.method) == {"transmix"} and (history.value > 0).all()
    ours = table[(table.source == "ours") & (table.suite == "clean") & (table.ablation == "")]
    assert len(ours) == 6 * 2 * 2  # runs x {raw, ema} x {top1, top5}
    robust = table[(table.source == "ours") & ~table.suite.isin(["clean", "history"])]
    assert set(robust.suite) == {"occlusion", "shuffle", "adversarial", "ood", "corruption"}
    assert robust.run_id.nunique() == 6 and set(robust.variant) == {"raw", "ema"}
    assert set(ours.method) == {"deit", "transmix"} and set(ours.seed) == {0, 1, 2}
    assert ours.config_hash.nunique() == 6 and (ours.study == "smoke").all()
    assert (ours.n == 1000).all()  # the study's `evaluation: images` reached every evaluation job
    assert (table.source == "paper").sum() > 0

    figures = {
        "01_main_results": {"top1_by_method"},
        "02_robustness": {"occlusion", "shuffle", "corruption"},
        "03_ablations": {"ablation_axes"},
        "04_attention_vs_area": {"fig1_pairs", "area_vs_attention", "gap_during_training"},
        "05_training_dynamics": {"loss_and_top1", "throughput"},
    }
    for name, expected in figures.items():
        notebook = json.loads((cwd / f"results/smoke/notebooks/{name}.ipynb").read_text())
        outputs = [o for cell in notebook["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], name
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: a figure was rendered"
        saved = {p.stem for p in (cwd / f"results/smoke/figures/{name}").glob("*.png")}
        assert expected <= saved, (name, saved)
    html = (cwd / "results/smoke/notebooks/01_main_results.html").read_text()
    assert "transmix" in html and "DeiT-S" in html

    again = snakemake(cwd, "--cores", "2", "--configfile", "workflow/config/smoke.yaml")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    report = snakemake(cwd, "--configfile", "workflow/config/smoke.yaml", "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (cwd / "report.html").read_text()
    for caption in ("The paper's Fig. 1 on real test images", "Top-1 at every value of each ablation axis"):
        assert caption in html, caption
