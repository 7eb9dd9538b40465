"""Distillation: a finished run teaches a student through timm's tasks, on the student's own mixed images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from transmix.config.run import from_dict
from transmix.data import eval_split
from transmix.method.mixing import soft_targets
from transmix.method.models import build_model
from transmix.training.checkpoint import FINAL
from transmix.training.distill import TeacherError, load_teacher
from transmix.training.step import Stepper
from transmix.training.train import train

pytestmark = pytest.mark.slow  # trains a student
STUDENT = "deit_nano_distilled_patch4_28"


def student_config(fashion_root: Path, teacher: Path, **values):
    base = dict(data_dir=str(fashion_root), model=STUDENT, teacher=str(teacher), distillation="soft",
                train_subset=256, val_subset=128, epochs=1, batch_size=64, warmup_epochs=0)  # fmt: skip
    return from_dict({**base, **values})


def student_step(cfg, teacher_dir: Path):
    """A student, its teacher and a Stepper around both, with the models' inputs and outputs recorded."""
    torch.manual_seed(0)
    data = eval_split(cfg, 128)
    student = build_model(cfg, data)
    teacher = load_teacher(cfg, data, torch.device("cpu"))
    seen: dict[str, list] = {"student": [], "teacher": []}
    for name, model in (("student", student), ("teacher", teacher)):
        model.register_forward_hook(lambda _m, args, out, name=name: seen[name].append((args[0].clone(), out)))
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    stepper = Stepper(cfg, student, opt, 10, torch.device("cpu"), (28, 28), teacher=teacher)
    return data, student, teacher, stepper, seen


def test_the_teacher_sees_the_students_mixed_images_and_stays_frozen(fashion_root, finished_run) -> None:
    cfg = student_config(fashion_root, finished_run, method="transmix", cutmix_alpha=1.0, switch_prob=1.0)
    data, student, teacher, stepper, seen = student_step(cfg, finished_run)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = next(iter(data.eval_batches(64)))
    out = stepper(x, y, torch.Generator().manual_seed(1))
    (s_in, _), (t_in, _) = seen["student"][0], seen["teacher"][0]
    assert torch.equal(s_in, t_in) and not torch.equal(s_in, x)  # mixed, and the same mixed images for both
    assert out.mode == "cutmix" and out.lam is not None  # TransMix read the student's attention, not the teacher's
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # the step left it as it was
    assert student.distilled_training  # the distillation token learns the teacher


@pytest.mark.parametrize(("kind", "tau"), [("soft", 4.0), ("hard", 1.0)])
def test_the_loss_is_deits_weighting_of_the_label_and_teacher_terms(fashion_root, finished_run, kind, tau) -> None:
    cfg = student_config(fashion_root, finished_run, method="none", distillation=kind, distill_tau=tau,
                         distill_alpha=0.3)  # fmt: skip
    data, _, _, stepper, seen = student_step(cfg, finished_run)
    x, y = next(iter(data.eval_batches(64)))
    loss = float(stepper(x, y, torch.Generator().manual_seed(1)).loss)
    (_, (main, dist)), (_, teacher) = seen["student"][0], seen["teacher"][0]
    label = -(soft_targets(y, y, 10, 1.0, cfg.label_smoothing) * main.log_softmax(-1)).sum(-1).mean()
    if kind == "soft":
        kd = F.kl_div((dist / tau).log_softmax(-1), (teacher / tau).log_softmax(-1), reduction="batchmean",
                      log_target=True) * tau**2  # fmt: skip
    else:
        kd = F.cross_entropy(dist, teacher.argmax(-1))
    assert loss == pytest.approx(float((0.7 * label + 0.3 * kd).detach()), rel=1e-5)


def test_a_student_trains_from_a_run_directory_and_records_its_teacher(fashion_root, finished_run, tmp_path) -> None:
    cfg = student_config(fashion_root, finished_run, method="deit", distillation="hard")
    final = train(cfg, tmp_path / "student", progress=False)
    saved = torch.load(final, weights_only=True)
    assert saved["config"]["teacher"] == str(finished_run) and saved["config"]["distillation"] == "hard"


def test_a_teacher_that_cannot_teach_is_a_clear_error(fashion_root, finished_run, tmp_path) -> None:
    cfg = student_config(fashion_root, tmp_path / "unfinished")
    data = eval_split(cfg, 16)
    with pytest.raises(TeacherError, match="unfinished/final.pt does not exist: the run has not finished"):
        load_teacher(cfg, data, torch.device("cpu"))
    state = torch.load(finished_run / FINAL, weights_only=True)
    fewer_classes = lambda s: s["ema"].update({k: s["ema"][k][:5] for k in ("head.weight", "head.bias")})  # noqa: E731
    other_images = lambda s: s["config"].update(dataset="imagefolder", img_size=32, train_subset=0, val_subset=0)  # noqa: E731
    for name, edit in (("classes", fewer_classes), ("images", other_images)):
        other = tmp_path / name
        other.mkdir()
        changed = {**state, "config": dict(state["config"]), "ema": dict(state["ema"])}
        edit(changed)
        torch.save(changed, other / FINAL)
        message = "does not fit this run's data of 10 classes" if name == "classes" else "trained on other images"
        with pytest.raises(TeacherError, match=message):
            load_teacher(student_config(fashion_root, other), data, torch.device("cpu"))
    shutil.rmtree(tmp_path / "classes")
    one_output = student_config(fashion_root, finished_run, model="vit_micro_patch4_28", distillation="hard")
    with pytest.raises(TeacherError, match="distillation=hard needs a student with a distillation token"):
        train(one_output, tmp_path / "one-output", progress=False)


def test_the_benchmark_measures_the_teachers_cost_side_by_side(tmp_path) -> None:
    import csv
    import subprocess

    out = tmp_path / "bench.csv"
    result = subprocess.run(["transmix", "bench", "--model", STUDENT, "--teacher-model", "vit_micro_patch4_28",
                             "--batch-size", "32", "--steps", "2", "--rounds", "2", "--warmup", "1", "--threads", "1",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["column"]: r for r in csv.DictReader(out.open())}
    assert list(rows) == ["deit", "transmix", "transmix-explicit", "timm", "deit+kd"]
    kd = rows["deit+kd"]
    assert float(kd["vs_deit_low"]) <= float(kd["vs_deit"]) <= float(kd["vs_deit_high"])
    assert "deit+kd" in result.stdout
