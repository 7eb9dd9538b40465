"""The Snakemake pipeline for real: the smoke study end to end (every rule, every notebook, the report)."""

from __future__ import annotations

import json
import re

import pytest

from transmix.records.results import read, write

pytestmark = pytest.mark.slow  # starts Snakemake
MODEL, METHODS = "vit_micro_patch4_28", ("deit", "transmix")


def test_smoke_study_end_to_end(pipeline, snakemake) -> None:
    cwd = pipeline
    result = snakemake(cwd, "--cores", "2", "--configfile", "workflow/config/smoke.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    # one line per finished epoch of every run on the terminal, while the rest goes to the job's log
    epoch_lines = re.findall(r"^\S+ (\S+__s\d) epoch (\d+)/(\d+) loss \S+ val top-1 ", result.stdout, re.M)
    assert {(run, epoch) for run, epoch, _ in epoch_lines} >= {(f"{MODEL}__{m}__s{s}", "1") for m in METHODS
                                                              for s in (0, 1)}  # fmt: skip
    log = (cwd / f"results/smoke/logs/train/{MODEL}__transmix__s0.log").read_text()
    assert re.search(r"epoch 1/1 step \d+/\d+ loss", log) and " val top-1 " in log
    assert not re.search(r"epoch 1/1 step \d+/\d+ loss", result.stdout)  # the rest stayed in the log

    table = read(cwd / "results/smoke/results.csv")
    students = table[table.ablation.str.startswith("kd=") & (table.suite == "clean")]
    assert students.groupby("ablation").run_id.nunique().to_dict() == {
        f"kd={teacher}.soft4": 2 for teacher in METHODS} | {"kd=alone": 2}  # fmt: skip
    points = table[(table.source == "ours") & (table.ablation != "") & (table.suite == "clean")]
    points = points[~points.ablation.str.startswith("kd=")]
    assert points.groupby("ablation").run_id.nunique().to_dict() == {
        "area_weight=0.0": 1, "attn_heads=max": 1, "switch_prob=0.8": 2}  # fmt: skip
    history = table[(table.suite == "history") & (table.metric == "lam_gap_mean")]
    assert set(history.method) == {"transmix"} and (history.value > 0).all()
    ours = table[(table.source == "ours") & (table.suite == "clean") & (table.ablation == "")]
    assert len(ours) == 4 * 2 * 2  # runs x {raw, ema} x {top1, top5}
    robust = table[
        (table.source == "ours")
        & ~table.suite.isin(["clean", "history", "best_epoch", "attention_area", "calibration"])
    ]
    assert set(robust.suite) == {"occlusion", "shuffle", "adversarial", "ood", "corruption"}
    assert robust.run_id.nunique() == 4 and set(robust.variant) == {"raw", "ema"}
    assert set(ours.method) == {"deit", "transmix"} and set(ours.seed) == {0, 1}
    assert ours.config_hash.nunique() == 4 and (ours.study == "smoke").all()
    assert (ours.n == 1000).all()  # the study's `evaluation: images` reached every evaluation job
    assert (table.source == "paper").sum() > 0
    pairs = table[table.suite == "attention_area"]  # every run pastes boxes: deit and transmix
    assert pairs.run_id.nunique() == 4 + 4 and set(pairs.metric) == {"gap_mean", "correlation", "attn_below_area"}
    assert (pairs.n == 50).all()  # the study's `evaluation: pairs` reached every evaluation job

    figures = {
        "01_main_results": {"top1_by_method", "scale_ladder"},
        "02_robustness": {"occlusion", "shuffle", "corruption"},
        "03_ablations": {"ablation_axes"},
        "04_attention_vs_area": {"fig1_pairs", "area_vs_attention", "gap_during_training"},
        "05_training_dynamics": {"loss_and_top1", "throughput"},
        "06_distillation": {"teachers", "students", "differences"},
    }
    for name, expected in figures.items():
        notebook = json.loads((cwd / f"results/smoke/notebooks/{name}.ipynb").read_text())
        outputs = [o for cell in notebook["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], name
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: a figure was rendered"
        saved = {p.stem for p in (cwd / f"results/smoke/figures/{name}").glob("*.png")}
        assert expected <= saved, (name, saved)
        # The page a reviewer reads: prose, the setup, tables, figures and a conclusion; no code, no stderr, no
        # warning, no path of this machine. The log papermill and nbconvert leave has no parameter complaint.
        page = (cwd / f"results/smoke/notebooks/{name}.html").read_text()
        visible = re.sub(r"<(style|script)\b.*?</\1>", "", page, flags=re.S)
        assert "jp-InputArea-editor" not in visible, f"{name}: code on the page"
        assert "application/vnd.jupyter.stderr" not in visible, f"{name}: stderr on the page"
        assert not re.search(r"\w*Warning\b", visible), (name, re.findall(r".{80}Warning.{80}", visible))
        assert str(cwd) not in visible and "/tmp/" not in visible and "site-packages" not in visible, name
        assert 'id="Setup"' in visible and 'id="Conclusion"' in visible, name
        log = (cwd / f"results/smoke/logs/notebooks/{name}.log").read_text()
        assert "Unable to parse" not in log and "unknown parameter" not in log, log
    html = (cwd / "results/smoke/notebooks/01_main_results.html").read_text()
    assert "transmix" in html and "DeiT-S" in html and "no difference shown" in html
    assert "this study" in html and "mergemix" in html  # the scale ladder: our rung beside the published ones

    # Notebook 01 pairs against the study's baseline; with one method it renders without the paired parts.
    import papermill

    alone = cwd / "transmix_only.csv"
    write(table[(table.source == "paper") | (table.method != "deit")], alone)  # as collect writes a one-method study
    cases = {
        (alone, "deit"): "Methods ['transmix']: no other method to pair against `deit`.",
        (cwd / "results/smoke/results.csv", "transmix"): "deit  transmix",
    }  # method, baseline columns
    for (csv, baseline), expected in cases.items():
        executed = papermill.execute_notebook(
            str(cwd / "notebooks/01_main_results.ipynb"), str(cwd / "01.ipynb"), progress_bar=False, cwd=str(cwd),
            parameters={"results_csv": str(csv), "study": "smoke", "baseline": baseline},
        )  # fmt: skip
        outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
        texts = [o.get("text", "") + "".join(o.get("data", {}).get(k, "") for k in ("text/plain", "text/markdown"))
                 for o in outputs]  # fmt: skip
        assert any(expected in text for text in texts), texts

    again = snakemake(cwd, "--cores", "2", "--configfile", "workflow/config/smoke.yaml")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    report = snakemake(cwd, "--configfile", "workflow/config/smoke.yaml", "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (cwd / "report.html").read_text()
    for caption in ("The paper's Fig. 1 on real test images", "Top-1 at every value of each ablation axis"):
        assert caption in html, caption

    # A per-run table cut after the fact stops the workflow before `collect`, naming it; the last good
    # results.csv (which `collect` would have replaced) is left as it was.
    kept = (cwd / "results/smoke/results.csv").read_bytes()
    cut = cwd / f"results/smoke/evaluate/{MODEL}__transmix__s0.csv"
    cut.write_text("".join(cut.read_text().splitlines(keepends=True)[:2]))
    refused = snakemake(cwd, "--cores", "2", "--configfile", "workflow/config/smoke.yaml")
    assert refused.returncode != 0 and str(cut.relative_to(cwd)) in refused.stderr, refused.stderr[-3000:]
    assert "lacks rows" in refused.stderr
    assert (cwd / "results/smoke/results.csv").read_bytes() == kept
