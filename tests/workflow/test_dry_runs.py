"""The Snakemake pipeline without running it: dry-run job lists, lint, quoting, and a config error that stops it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here starts Snakemake
REPO = Path(__file__).resolve().parents[2]
RUN = "vit_micro_patch4_28__transmix__s0"


def test_dry_run_lists_the_default_study(pipeline, snakemake, dry_run_jobs) -> None:
    result = snakemake(pipeline, "-n")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    # notebooks 01 (main result), 04 (attention vs area) and 05 (training dynamics)
    assert dry_run_jobs(out) == {
        "all": 1,
        "check_tables": 1,
        "collect": 1,
        "data": 1,
        "evaluate": 6,
        "notebook": 3,
        "train": 6,
        "total": 19,
    }
    for method in ("deit", "transmix"):
        for seed in range(3):
            assert f"results/default/train/vit_micro_patch4_28__{method}__s{seed}/final.pt" in out


def test_one_target_runs_only_its_jobs(pipeline, snakemake, dry_run_jobs) -> None:
    result = snakemake(pipeline, "-n", f"results/default/evaluate/{RUN}.csv")
    assert result.returncode == 0, result.stderr
    assert dry_run_jobs(result.stdout + result.stderr) == {"data": 1, "evaluate": 1, "train": 1, "total": 3}


def test_the_ablation_grid_and_one_point_as_one_target(pipeline, snakemake, dry_run_jobs) -> None:
    config = ("--configfile", "workflow/config/ablations.yaml")
    whole = snakemake(pipeline, "-n", *config)
    assert whole.returncode == 0, whole.stderr
    # 6 main runs; 9 TransMix-only points (w, block, k, heads) x 3 seeds; 3 points of both methods x 2 x 3 seeds
    counts = dry_run_jobs(whole.stdout + whole.stderr)
    assert counts["train"] == counts["evaluate"] == 6 + 9 * 3 + 3 * 2 * 3 and counts["ablation"] == 12

    point = "results/ablations/ablations/attn_block=-2.csv"
    one = snakemake(pipeline, "-n", "-p", point, *config)
    assert one.returncode == 0, one.stderr
    out = one.stdout + one.stderr
    assert dry_run_jobs(out) == {"data": 1, "train": 3, "evaluate": 3, "ablation": 1, "total": 8}
    trained = set(re.findall(r"results/ablations/train/(\S+)/final\.pt", out))
    assert trained == {f"vit_micro_patch4_28__transmix__s{seed}__attn_block=-2" for seed in range(3)}
    assert "--set attn_block=-2 " in out and "--set ablation=attn_block=-2 " in out

    both = snakemake(pipeline, "-n", "results/ablations/ablations/switch_prob=0.8.csv", *config)
    assert dry_run_jobs(both.stdout + both.stderr)["train"] == 6  # deit and transmix: the gain at this value


def test_lint_is_clean(snakemake) -> None:
    result = snakemake(REPO, "--lint")
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [  # a misspelt key: found when the Snakefile is read; a misspelt model: before the first job (needs torch)
        ("  epochs: 1\n", "  epochs: 1\n  swich_prob: 0.8\n", "did you mean `switch_prob`"),
        ("models: [vit_micro_patch4_28]", "models: [vit_micro_patch4_28x]", "did you mean vit_micro_patch4_28,"),
    ],
)
def test_a_bad_study_stops_snakemake_before_any_job(pipeline, snakemake, old: str, new: str, message: str) -> None:
    # Every way a study can be wrong is tested in process (tests/unit/test_study.py); this shows the Snakefile runs
    # those checks before any job, so nothing is written.
    config = pipeline / "workflow/config/smoke.yaml"
    config.write_text(config.read_text().replace(old, new))
    result = snakemake(pipeline, "--cores", "1", "--configfile", str(config))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (pipeline / "results").exists() and not (pipeline / "data").exists()


def test_multi_gpu_jobs_use_torchrun_and_config_values_reach_the_shell_quoted(pipeline, snakemake) -> None:
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


def test_dry_run_of_the_imagenet_study_needs_no_data(pipeline, snakemake, dry_run_jobs) -> None:
    result = snakemake(pipeline, "-n", "-p", "--configfile", "workflow/config/imagenet.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    runs = len(IMAGENET_MODELS) * 2
    assert dry_run_jobs(out) == {"all": 1, "check_tables": 1, "collect": 1, "data": 1, "evaluate": runs,
                               "robustness": runs, "notebook": 4, "train": runs, "total": 3 * runs + 8}  # fmt: skip
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


def test_dry_run_of_the_cifar100_study_lists_its_jobs(pipeline, snakemake, dry_run_jobs) -> None:
    result = snakemake(pipeline, "-n", "-p", "--configfile", "workflow/config/cifar100.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    runs = 5 * 3  # five mixing methods (OpenMixup's columns) x three seeds
    assert dry_run_jobs(out) == {"all": 1, "check_tables": 1, "collect": 1, "data": 1, "evaluate": runs,
                                 "notebook": 3, "train": runs, "total": 2 * runs + 7}  # fmt: skip
    assert "transmix data --dataset cifar100 --root data/cifar100" in out  # the data job writes the class folders
    trained = set(re.findall(r"results/cifar100/train/(\S+)/final\.pt", out))
    assert trained == {f"deit_small_patch16_224__{m}__s{s}" for m in ("none", "mixup", "cutmix", "deit", "transmix")
                       for s in (0, 1, 2)}  # fmt: skip


def test_dry_run_of_the_fashion_gpu_study_lists_its_jobs(pipeline, snakemake, dry_run_jobs) -> None:
    result = snakemake(pipeline, "-n", "-p", "--configfile", "workflow/config/fashion_gpu.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    runs = 3 * 5  # none, deit, transmix x five seeds: the runs `transmix chunk` trains too
    assert dry_run_jobs(out) == {"all": 1, "check_tables": 1, "collect": 1, "data": 1, "evaluate": runs,
                                 "notebook": 3, "train": runs, "total": 2 * runs + 7}  # fmt: skip
    trained = set(re.findall(r"results/fashion_gpu/train/(\S+)/final\.pt", out))
    assert trained == {f"vit_tiny_patch4_28__{m}__s{s}" for m in ("none", "deit", "transmix") for s in range(5)}
    command = next(line for line in out.splitlines() if "train --out results/fashion_gpu/train/" in line)
    for setting in ("device=cuda", "precision=bf16", "compile=True", "train_subset=0"):
        assert f"--set {setting} " in command, setting


STUDENT = "deit_nano_distilled_patch4_28__transmix__s1__kd=deit.soft4"


def test_one_distillation_student_trains_its_teacher_and_nothing_else(pipeline, snakemake, dry_run_jobs) -> None:
    target = f"results/distillation/evaluate/{STUDENT}.csv"
    result = snakemake(pipeline, "-n", "-p", target, "--configfile", "workflow/config/distillation.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert dry_run_jobs(out) == {"data": 1, "evaluate": 1, "train": 2, "total": 4}
    trained = set(re.findall(r"results/distillation/train/(\S+)/final\.pt", out))
    assert trained == {STUDENT, "vit_micro_patch4_28__deit__s1"}  # the teacher: the deit run of the student's seed
    student = next(line for line in out.splitlines() if f"train --out results/distillation/train/{STUDENT} " in line)
    for setting in ("teacher=results/distillation/train/vit_micro_patch4_28__deit__s1", "distillation=soft",
                    "distill_tau=4.0", "distill_alpha=0.5", "epochs=5", "ablation=kd=deit.soft4"):  # fmt: skip
        assert f"--set {setting} " in student, setting


def test_dry_run_of_the_distillation_study_lists_teachers_students_and_notebook_06(
    pipeline, snakemake, dry_run_jobs
) -> None:
    result = snakemake(pipeline, "-n", "--configfile", "workflow/config/distillation.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    teachers, students = 3 * 3, 3 * 3 * (3 * 3 + 1)  # methods x seeds; methods x seeds x (teachers x kinds + alone)
    jobs = dry_run_jobs(out)
    assert (jobs["train"], jobs["evaluate"]) == (teachers + students, teachers + students)
    assert "results/distillation/notebooks/06_distillation.html" in out
