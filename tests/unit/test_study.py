"""A study config -> its runs, and every way a study config can be wrong, in process: the same checks the
Snakefile runs when it parses (the JSON schema, then :meth:`Study.check`), on the repository's own study files.
One subprocess test in tests/workflow shows that such an error stops Snakemake before any job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from transmix.config.run import ConfigError
from transmix.config.run_id import ALONE, Ablation, PublishedId, RunId, RunIdError, Student
from transmix.config.study import Study, StudyError
from transmix.method.models import check_model

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def config(name: str) -> dict:
    return yaml.safe_load((REPO / f"workflow/config/{name}.yaml").read_text())


def study(values: dict) -> Study:
    """As the Snakefile does: schema first, then the study's own checks."""
    validate(values, str(SCHEMA))
    parsed = Study(values)
    parsed.check()
    return parsed


def test_run_ids_round_trip() -> None:
    assert str(RunId("vit_micro_patch4_28", "deit", 2)) == "vit_micro_patch4_28__deit__s2"
    ablated = RunId("vit_micro_patch4_28", "transmix", 0, Ablation("attn_block", "-2"))
    assert str(ablated) == "vit_micro_patch4_28__transmix__s0__attn_block=-2" and ablated.ablation == "attn_block=-2"
    assert RunId.parse(str(ablated)) == ablated
    student = RunId.parse("deit_nano_distilled_patch4_28__none__s1__kd=transmix.soft4")
    assert student.student == Student("transmix", "soft", 4.0) and student.student.label == "soft T=4"
    assert RunId.parse("m__deit__s0__kd=alone").student == Student(ALONE)
    assert RunId.parse("m__deit__s0__kd=deit.hard").student.label == "hard"
    assert ablated.with_method("deit") == RunId.parse("vit_micro_patch4_28__deit__s0__attn_block=-2")
    with pytest.raises(RunIdError, match="is not model__method__s<seed>"):  # a config error, exit code 2
        RunId.parse("vit__deit__seed0")
    with pytest.raises(RunIdError, match="kd='deit.warm' is not"):
        RunId.parse("m__deit__s0__kd=deit.warm")


@pytest.mark.parametrize("table", sorted(Path("results").glob("*/results.csv")) + [Path("transmix/paper.csv")])
def test_every_committed_run_id_round_trips(table: Path) -> None:
    """Every id in every committed table reads back to itself, and a run's point is its rows' ``ablation``."""
    rows = pd.read_csv(table, keep_default_na=False, dtype=str)
    ours = rows[rows.source == "ours"]
    for run, ablation in set(zip(ours.run_id, ours.get("ablation", ours.run_id), strict=True)):
        assert str(RunId.parse(run)) == run and RunId.parse(run).ablation == ablation
    for published in rows.loc[rows.source == "paper", "run_id"].unique():
        assert str(PublishedId.parse(published)) == published


def test_the_default_study_is_six_runs_and_three_notebooks() -> None:
    default = study(config("default"))
    assert default.run_ids() == [f"vit_micro_patch4_28__{m}__s{s}" for m in ("deit", "transmix") for s in range(3)]
    assert default.notebooks() == ["01_main_results", "04_attention_vs_area", "05_training_dynamics"]
    assert default.points == {}
    assert default.evaluation_images == 0 and study(config("smoke")).evaluation_images == 1000


def test_the_ablation_grid_and_its_points() -> None:
    grid = study(config("ablations"))
    assert len(grid.points) == 12 and grid.points["attn_block=-2"] == ("attn_block", -2)
    # 9 TransMix-only points (w, block, k, heads) x 3 seeds; 3 points of both methods x 2 x 3 seeds
    runs = [run for point in grid.points for run in grid.ablation_runs(point)]
    assert len(runs) == len(set(runs)) == 9 * 3 + 3 * 2 * 3
    assert grid.ablation_runs("attn_block=-2") == [f"vit_micro_patch4_28__transmix__s{s}__attn_block=-2"
                                                   for s in range(3)]  # fmt: skip
    assert len(grid.ablation_runs("switch_prob=0.8")) == 6  # deit and transmix: the gain at this value
    settings = grid.settings("vit_micro_patch4_28__transmix__s1__attn_block=-2")
    assert settings["attn_block"] == -2 and settings["ablation"] == "attn_block=-2" and settings["seed"] == 1
    assert settings["lr"] == 0.002 and settings["study"] == "ablations"
    assert grid.notebooks() == ["01_main_results", "03_ablations", "04_attention_vs_area", "05_training_dynamics"]
    with pytest.raises(StudyError, match="'attn_block=-3' is not a point"):
        grid.settings("vit_micro_patch4_28__transmix__s1__attn_block=-3")


def test_the_baseline_every_method_is_paired_against() -> None:
    assert study(config("default")).baseline == "deit"
    assert study({**config("default"), "methods": ["cutmix", "transmix"]}).baseline == "cutmix"
    assert study({**config("default"), "methods": ["transmix", "mixup"], "baseline": "mixup"}).baseline == "mixup"
    assert study({**config("default"), "methods": ["transmix"]}).baseline == "transmix"  # nothing to pair


def test_the_own_data_example_is_a_study_that_runs() -> None:
    """The commented example for a user's class folders passes every check a real study meets before its jobs."""
    own = study(config("own_data"))
    own.check_models(check_model)
    settings = own.settings(own.run_ids()[0])
    assert settings["dataset"] == "imagefolder" and settings["hflip"] == 0.0 and settings["scale"] == [0.35, 1.0]
    assert own.notebooks() == ["01_main_results", "04_attention_vs_area", "05_training_dynamics"]


def test_per_model_overrides_reach_their_runs_only() -> None:
    imagenet = study(config("imagenet"))
    small = imagenet.settings("deit_small_patch16_224__transmix__s0")
    base = imagenet.settings("deit_base_patch16_224__transmix__s0")
    assert (small["weight_decay"], small["warmup_epochs"], small["switch_prob"]) == (0.03, 20, 0.5)
    assert (base["weight_decay"], base["warmup_epochs"], base["switch_prob"]) == (0.05, 5, 0.8)
    assert imagenet.model_config("deit_small_patch16_224").weight_decay == 0.03
    assert len(imagenet.run_ids()) == 32 and imagenet.dataset == "imagefolder"


def test_the_other_mixes_train_on_the_models_that_name_them() -> None:
    reference = study(config("reference"))
    runs = reference.run_ids()
    assert len(runs) == 3 * 2 * 5 + 3 * 5 and len(set(runs)) == len(runs)
    others = {(r.split("__")[0], r.split("__")[1]) for r in runs if r.split("__")[1] in ("none", "mixup", "cutmix")}
    assert others == {("vit_micro_patch4_28", m) for m in ("none", "mixup", "cutmix")}
    settings = reference.settings("vit_micro_patch4_28__mixup__s4")
    assert (settings["method"], settings["seed"], settings["epochs"]) == ("mixup", 4, 10)


def edit_axes(axes: dict):
    def edit(values: dict) -> None:
        values["ablations"]["axes"] = axes

    return edit


@pytest.mark.parametrize(
    ("name", "edit", "error", "message"),
    [
        ("smoke", lambda c: c["train"].update(swich_prob=0.8), ConfigError, "did you mean `switch_prob`"),
        ("smoke", lambda c: c.update(seed=3), Exception, "Additional properties are not allowed"),
        ("smoke", lambda c: c.update(methods=["deit", "transmixx"]), Exception, "transmixx"),
        ("smoke", lambda c: c["robustness"].update(suites=["natural", "occlusion"]), ConfigError,
         "Fashion-MNIST has no natural"),
        ("smoke", lambda c: c["robustness"]["protocol"].update(occlusion_fraction=[0.5]), ConfigError,
         "did you mean `occlusion_fractions`"),
        ("imagenet", lambda c: c["overrides"].update(deit_smal_patch16_224={"lr": 0.1}), StudyError,
         r"overrides name model\(s\) not in `models`: \['deit_smal_patch16_224'\]"),
        ("imagenet", lambda c: c["overrides"]["deit_small_patch16_224"].update(lr=-1), ConfigError,
         "lr=-1.0 must be > 0"),
        ("ablations", edit_axes({"area_weight": [0.5]}), StudyError, "area_weight=0.5 is the study's own setting"),
        ("ablations", edit_axes({"model": ["deit_tiny_patch16_224"]}), StudyError, "names the run or its data"),
        ("ablations", edit_axes({"attn_head": ["max"]}), ConfigError, "did you mean `attn_heads`"),
        ("ablations", edit_axes({"attn_blocks": [0]}), ConfigError, "attn_blocks=0 must be >= 1"),
        ("ablations", lambda c: c["ablations"].update(models=["vit_nano"]), StudyError, "ablations name model"),
        ("ablations", lambda c: c.update(methods=["deit", "cutmix"]), StudyError,
         r"axis 'area_weight' changes only how TransMix .* have no transmix"),
        ("reference", lambda c: c["more_methods"].update(vit_nano=["none"]), StudyError,
         r"more_methods name model\(s\) not in `models`: \['vit_nano'\]"),
        ("reference", lambda c: c["more_methods"].update(xcit_micro_patch8_28=["transmix"]), StudyError,
         r"lists \['transmix'\], which `methods` already trains"),
        ("reference", lambda c: c["more_methods"].update(xcit_micro_patch8_28=["area"]), Exception, "'area' is not"),
        ("default", lambda c: c.update(baseline="mixup"), StudyError, "baseline 'mixup' is not one of the study's"),
        ("default", lambda c: c.update(baseline="area"), Exception, "'area' is not one of"),
        ("distillation", lambda c: c["distillation"].update(teachers=["mixup"]), StudyError,
         r"teachers \['mixup'\] are not methods of the study"),
        ("distillation", lambda c: c["distillation"].update(model="vit_micro_patch4_28"), StudyError,
         "kind hard needs a student with a distillation token"),
        ("distillation", lambda c: c["distillation"].update(seeds=[0, 7]), StudyError, r"seeds \[7\] have no teacher"),
        ("distillation", lambda c: c["distillation"]["train"].update(distill_tau=2), StudyError,
         r"sets \['distill_tau'\], which the section itself decides"),
        ("distillation", lambda c: c["distillation"]["train"].update(epochs=0), ConfigError, "epochs=0 must be >= 1"),
        ("distillation", lambda c: c["distillation"].update(kinds=["hard"]), StudyError, "`temperatures` set"),
        ("distillation", lambda c: c["distillation"].update(kinds=["warm"]), Exception, "'warm' is not one of"),
    ],
)  # fmt: skip
def test_a_bad_study_is_refused_naming_the_key(name: str, edit, error: type, message: str) -> None:
    values = config(name)
    edit(values)
    with pytest.raises(error, match=message):
        study(values)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("vit_micro_patch4_28x", r"not in timm's registry; did you mean vit_micro_patch4_28,"),
        ("vit_tiny_patch16_224", r"does not fit img_size=28: 1 tokens of stride 16 do not tile 28 .* \(e.g. 32\)"),
    ],
)
def test_a_model_that_cannot_train_on_the_study_is_refused(model: str, message: str) -> None:
    bad = study({**config("default"), "models": [model]})
    bad.check()  # names and keys are fine: only building the model shows it
    with pytest.raises(StudyError, match=message):
        bad.check_models(check_model)


@pytest.mark.slow  # 16 models built (on the meta device, but timm still initialises them)
def test_every_imagenet_model_fits_its_images() -> None:
    study(config("imagenet")).check_models(check_model)


def test_the_gpu_study_trains_a_tiny_vit_on_every_fashion_image_and_states_its_outcome_first() -> None:
    gpu = study(config("fashion_gpu"))
    gpu.check_models(check_model)
    assert gpu.run_ids() == [f"vit_tiny_patch4_28__{method}__s{seed}" for method in ("none", "deit", "transmix")
                             for seed in range(5)]  # fmt: skip
    cfg = gpu.model_config("vit_tiny_patch4_28")
    assert (cfg.dataset, cfg.train_subset, cfg.device, cfg.precision) == ("fashion_mnist", 0, "cuda", "bf16")
    assert cfg.epochs >= 100 and cfg.compile and cfg.fused and cfg.tf32 and cfg.sync_every > 1 and cfg.val_every > 1
    assert gpu.baseline == "deit" and gpu.evaluation_images == 0  # all 10,000 test images
    description = " ".join(gpu.config["description"].split())
    assert "primary outcome: transmix - deit top-1 of the EMA weights on the 10,000 test images" in description
    assert "paired by seed, 95% t-interval; deit - none" in description
    assert gpu.config["resources"]["train"]["gpus"] == 1


def test_the_distillation_study_its_students_and_their_teachers() -> None:
    parsed = study(config("distillation"))
    assert parsed.notebooks()[-1] == "06_distillation"
    students = parsed.students()
    assert len(students) == 3 * 3 * (3 * 3 + 1) == len(set(students))  # seeds x methods x (teachers x kinds + alone)
    student = "deit_nano_distilled_patch4_28__none__s2__kd=transmix.soft4"
    assert student in students and parsed.teacher(student) == "vit_micro_patch4_28__transmix__s2"
    values = parsed.settings(student)
    assert values["teacher"] == "results/distillation/train/vit_micro_patch4_28__transmix__s2"
    assert (values["distillation"], values["distill_tau"], values["distill_alpha"]) == ("soft", 4.0, 0.5)
    assert (values["epochs"], values["train_subset"], values["lr"]) == (5, 8000, 0.002)  # its own budget, the recipe
    hard = parsed.settings("deit_nano_distilled_patch4_28__deit__s0__kd=none.hard")
    assert (hard["distillation"], "distill_tau" in hard) == ("hard", False)
    alone = parsed.settings("deit_nano_distilled_patch4_28__deit__s0__kd=alone")
    assert "teacher" not in alone and alone["ablation"] == "kd=alone"
    assert parsed.teacher("deit_nano_distilled_patch4_28__deit__s0__kd=alone") is None
    assert parsed.teacher("vit_micro_patch4_28__deit__s0") is None
    assert (parsed.pairs(student), parsed.pairs("vit_micro_patch4_28__deit__s0")) == (0, 200)
    with pytest.raises(StudyError, match="not a student"):
        parsed.settings("deit_nano_distilled_patch4_28__mixup__s0__kd=deit.hard")
