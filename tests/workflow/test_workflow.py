"""The Snakemake pipeline, for real: dry-run job lists, lint, config errors, and one smoke run end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from transmix.results import read

REPO = Path(__file__).resolve().parents[2]
RUN = "vit_micro_patch4_28__transmix__s0"


def snakemake(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["snakemake", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "XDG_CACHE_HOME": str(cwd / ".cache")},
    )


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def test_dry_run_lists_the_default_study(pipeline) -> None:
    result = snakemake(pipeline, "-n")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    # notebooks 01 (main result), 04 (attention vs area) and 05 (training dynamics)
    assert job_counts(out) == {"all": 1, "collect": 1, "data": 1, "evaluate": 6, "notebook": 3, "train": 6, "total": 18}
    for method in ("deit", "transmix"):
        for seed in range(3):
            assert f"results/default/train/vit_micro_patch4_28__{method}__s{seed}/final.pt" in out


def test_one_target_runs_only_its_jobs(pipeline) -> None:
    result = snakemake(pipeline, "-n", f"results/default/evaluate/{RUN}.csv")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout + result.stderr) == {"data": 1, "evaluate": 1, "train": 1, "total": 3}


def test_the_ablation_grid_and_one_point_as_one_target(pipeline) -> None:
    config = ("--configfile", "workflow/config/ablations.yaml")
    whole = snakemake(pipeline, "-n", *config)
    assert whole.returncode == 0, whole.stderr
    # 6 main runs; 9 TransMix-only points (w, block, k, heads) x 3 seeds; 3 points of both methods x 2 x 3 seeds
    counts = job_counts(whole.stdout + whole.stderr)
    assert counts["train"] == counts["evaluate"] == 6 + 9 * 3 + 3 * 2 * 3 and counts["ablation"] == 12

    point = "results/ablations/ablations/attn_block=-2.csv"
    one = snakemake(pipeline, "-n", "-p", point, *config)
    assert one.returncode == 0, one.stderr
    out = one.stdout + one.stderr
    assert job_counts(out) == {"data": 1, "train": 3, "evaluate": 3, "ablation": 1, "total": 8}
    trained = set(re.findall(r"results/ablations/train/(\S+)/final\.pt", out))
    assert trained == {f"vit_micro_patch4_28__transmix__s{seed}__attn_block=-2" for seed in range(3)}
    assert "--set attn_block=-2 " in out and "--set ablation=attn_block=-2 " in out

    both = snakemake(pipeline, "-n", "results/ablations/ablations/switch_prob=0.8.csv", *config)
    assert job_counts(both.stdout + both.stderr)["train"] == 6  # deit and transmix: the gain at this value


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ("    area_weight: [0.5]\n", "area_weight=0.5 is the study's own setting"),
        ("    model: [deit_tiny_patch16_224]\n", "names the run or its data"),
        ("    attn_head: [max]\n", "did you mean `attn_heads`"),
        ("    attn_blocks: [0]\n", "attn_blocks=0 must be >= 1"),
    ],
)
def test_bad_ablation_grid_fails_before_any_job(pipeline, axes: str, message: str) -> None:
    config = pipeline / "workflow/config/ablations.yaml"
    text = config.read_text()
    start = text.index("  axes:")
    end = text.index("resources:")
    config.write_text(text[:start] + "  axes:\n" + axes + text[end:])
    result = snakemake(pipeline, "-n", "--configfile", str(config))
    assert result.returncode != 0 and message in result.stdout + result.stderr, result.stderr[-2000:]


def test_lint_is_clean() -> None:
    result = snakemake(REPO, "--lint")
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("  epochs: 1\n", "  epochs: 1\n  swich_prob: 0.8\n"), "did you mean `switch_prob`"),
        (lambda t: t.replace("study: smoke", "study: smoke\nseed: 3"), "Additional properties are not allowed"),
        (lambda t: t.replace("methods: [deit, transmix]", "methods: [deit, transmixx]"), "transmixx"),
        (lambda t: t.replace("suites: [occlusion,", "suites: [natural, occlusion,"), "Fashion-MNIST has no natural"),
    ],
)
def test_bad_study_config_fails_before_any_job(pipeline, edit, message) -> None:
    cwd = pipeline
    config = cwd / "workflow/config/smoke.yaml"
    config.write_text(edit(config.read_text()))
    result = snakemake(cwd, "-n", "--configfile", str(config))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (cwd / "results").exists()


@pytest.mark.slow
def test_smoke_study_end_to_end(pipeline) -> None:
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


def test_multi_gpu_jobs_use_torchrun_and_config_values_reach_the_shell_quoted(pipeline) -> None:
    config = pipeline / "workflow/config/smoke.yaml"
    text = config.read_text().replace("train: {threads: 1, mem_mb: 2000, runtime: 10}", "train: {threads: 1, "
                                      "mem_mb: 2000, runtime: 10, gpus: 2}")  # fmt: skip
    config.write_text(text.replace("data_dir: data", 'data_dir: "da ta; touch pwned"'))
    dry = snakemake(pipeline, "-n", "-p", "--configfile", str(config))
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout + dry.stderr
    assert "torchrun --standalone --nproc_per_node 2 -m transmix.cli train --out" in out
    assert "--threads 1 --progress" in out  # the job's threads shared by its processes (at least one each)
    assert "--set 'data_dir=da ta; touch pwned'" in out
    target = "da ta; touch pwned/FashionMNIST/raw/train-images-idx3-ubyte"
    real = snakemake(pipeline, "--cores", "1", target, "--configfile", str(config))
    assert real.returncode == 0, real.stderr
    assert (pipeline / target).is_file() and not (pipeline / "pwned").exists()


IMAGENET_MODELS = (
    *(f"deit_{size}_patch16_224" for size in ("tiny", "small", "base")),
    "cait_xxs24_224",
    "cait_s24_224",
    *(f"xcit_{size}_p16_224" for size in ("tiny_12", "small_12", "medium_24", "large_24")),
    *(f"swin_{size}_patch4_window7_224" for size in ("tiny", "small", "base")),
    *(f"pvt_v2_b{i}" for i in (1, 2, 3, 4)),
)


def test_dry_run_of_the_imagenet_study_needs_no_data(pipeline) -> None:
    result = snakemake(pipeline, "-n", "-p", "--configfile", "workflow/config/imagenet.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    runs = len(IMAGENET_MODELS) * 2
    assert job_counts(out) == {"all": 1, "collect": 1, "data": 1, "evaluate": runs, "robustness": runs,
                               "notebook": 4, "train": runs, "total": 3 * runs + 7}  # fmt: skip
    trained = set(re.findall(r"results/imagenet/train/(\S+)/final\.pt", out))
    assert trained == {f"{model}__{method}__s0" for model in IMAGENET_MODELS for method in ("deit", "transmix")}
    assert "transmix data --check --root /path/to/imagenet" in out  # the data job checks; nothing is read now
    robust = next(line for line in out.splitlines() if "transmix robustness --run results/imagenet/train/" in line)
    for arg in ("--suite natural", "--suite ood", "--set natural_dir=/path/to/imagenet-a",
                "--set ood_dir=/path/to/imagenet-o"):  # fmt: skip
        assert arg in robust
    command = {model: line for line in out.splitlines() for model in ("deit_small", "deit_base")
               if f"train --out results/imagenet/train/{model}_patch16_224__" in line}  # fmt: skip
    for model, values in (("deit_small", "0.03 20 0.5"), ("deit_base", "0.05 5 0.8")):  # per-model overrides
        for key, value in zip(("weight_decay", "warmup_epochs", "switch_prob"), values.split(), strict=True):
            assert f"--set {key}={value} " in command[model], (model, key)
