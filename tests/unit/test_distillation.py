"""The distillation study's frames and sentences, on a table whose every difference is worked out by hand."""

from __future__ import annotations

import pandas as pd

from transmix.reporting.distillation import (
    against_deit,
    alone_in_every_kind,
    conclusions,
    in_order,
    kinds,
    soft_kinds,
    student_table,
    students,
    temperatures,
)

HALF = 4.302653 / 3**0.5  # the half-width of the 95% t-interval of three values with sd 1 (t(0.975, 2 df))
ALONE = {"none": [60.0, 61.0, 62.0], "transmix": [62.0, 62.0, 62.0]}  # each student method trained alone, by seed
# what each teacher adds to the student alone, by seed, for either student method
GAIN = {("soft1", "deit"): [1, 1, 1], ("soft1", "transmix"): [2, 3, 4], ("soft4", "deit"): [0, 0, 0],
        ("soft4", "transmix"): [1, 1, 1]}  # fmt: skip


def _row(model: str, method: str, seed: int, value: float, ablation: str = "", suite: str = "clean",
         metric: str = "top1") -> dict:  # fmt: skip
    return dict(model=model, method=method, seed=seed, value=value, ablation=ablation, suite=suite, metric=metric,
                variant="ema", n=1000)  # fmt: skip


def _ours() -> pd.DataFrame:
    rows = [_row("s", m, seed, v, "kd=alone") for m, values in ALONE.items() for seed, v in enumerate(values)]
    for (kind, teacher), gains in GAIN.items():
        for method, values in ALONE.items():
            rows += [_row("s", method, seed, v + g, f"kd={teacher}.{kind}") for seed, (v, g) in
                     enumerate(zip(values, gains, strict=True))]  # fmt: skip
    # the teachers: output entropy transmix - deit +0.2 at every seed; ECE -1, 0, +1
    for metric, values in {"entropy": {"deit": [1.0, 1.1, 1.2], "transmix": [1.2, 1.3, 1.4]},
                           "ece": {"deit": [5.0, 5.0, 5.0], "transmix": [4.0, 5.0, 6.0]}}.items():  # fmt: skip
        rows += [_row("t", m, seed, v, suite="calibration", metric=metric) for m, by_seed in values.items()
                 for seed, v in enumerate(by_seed)]  # fmt: skip
    return pd.DataFrame(rows)


def test_orders_and_kinds() -> None:
    assert in_order(["transmix", "alone", "deit", "none"]) == ["none", "deit", "transmix"]
    kd = students(_ours())
    assert kinds(kd) == ["soft T=1", "soft T=4"]
    assert soft_kinds(["soft T=1", "soft T=4", "hard"]) == ["soft T=1", "soft T=4"]
    panels = alone_in_every_kind(kd, kinds(kd))
    assert len(panels) == 2 * 2 * 2 * 3 + 2 * (2 * 3)  # the taught students, and the alone ones once per kind
    assert set(panels[panels.teacher == "alone"].kind) == {"soft T=1", "soft T=4"}


def test_the_students_table() -> None:
    table = student_table(students(_ours()))
    assert list(table.index) == [("alone", "alone"), ("soft T=1", "deit"), ("soft T=1", "transmix"),
                                 ("soft T=4", "deit"), ("soft T=4", "transmix")]  # fmt: skip
    assert list(table.columns) == ["none", "transmix"]
    assert table.loc[("alone", "alone"), "none"] == f"61.00 [{61 - HALF:.2f}, {61 + HALF:.2f}]"
    assert table.loc[("soft T=1", "transmix"), "transmix"] == f"65.00 [{65 - HALF:.2f}, {65 + HALF:.2f}]"


def test_contrasts_between_teachers_and_between_temperatures() -> None:
    kd = students(_ours())
    teachers = against_deit(kd).set_index(["kind", "method"])
    assert set(teachers.contrast) == {"transmix − deit teacher"}
    assert teachers.loc[("soft T=1", "none"), "mean"] == 2.0  # 1, 2, 3
    assert teachers.loc[("soft T=4", "none"), "mean"] == 1.0
    assert against_deit(kd[kd.teacher != "deit"]).empty
    soft = temperatures(kd).set_index(["teacher", "method"])  # soft T=1 - soft T=4
    assert soft.loc[("deit", "none"), "mean"] == 1.0 and soft.loc[("transmix", "none"), "mean"] == 2.0
    assert temperatures(kd[kd.kind != "soft T=4"]).empty


def test_the_sentences() -> None:
    lines = conclusions(_ours(), students(_ours()))
    # soft T=1 against alone, pooled over teachers and students per seed: 1.5, 2, 2.5 -> mean 2, sd 0.5
    assert lines[0] == ("soft T=1 distillation, any teacher and student, against the student alone is **higher**: by "
                        f"2.00 points (95% t-interval over 3 seeds [{2 - HALF / 2:+.2f}, {2 + HALF / 2:+.2f}], "
                        "excluding zero).")  # fmt: skip
    assert "soft T=4 distillation" in lines[1] and "**higher**: by 0.50 points" in lines[1]
    assert lines[2].startswith("soft T=1: a transmix teacher against a deit teacher (all students): +2.00 points, **no")
    assert lines[3].startswith("soft T=4: a transmix teacher against a deit teacher (all students) is **higher**: by 1")
    assert lines[4].startswith("deit teacher: soft T=1 against soft T=4 (all students) is **higher**: by 1.00")
    assert lines[5].startswith("transmix teacher: soft T=1 against soft T=4 (all students): +2.00 points, **no")
    # MIX-KD's case leaves out the students without mixing: per seed (1 + 1) / 2, (1 + 2) / 2, (1 + 3) / 2
    assert "MIX-KD's case" in lines[6] and "**higher**: by 1.50 points" in lines[6]
    assert lines[7] == ("teacher output entropy: transmix − deit is **higher**: by 0.20 nats (95% t-interval over 3 "
                        "seeds [+0.20, +0.20], excluding zero).")  # fmt: skip
    assert lines[8].startswith("teacher output ece: transmix − deit: +0.00 points of ECE, **no difference shown**")
    assert lines[9] == "Highest mean student top-1: transmix student, transmix teacher, soft T=1 (65.00%)."
    assert len(lines) == 10
