"""What a distillation study found, from its tidy table: students by teacher and kind, paired effects, teachers.

A student's run id names its teacher's method and the kind (:class:`~transmix.config.run_id.Student`), and its rows
carry that point in ``ablation``. Every comparison here pairs runs by seed: a
student of seed s was taught by the teacher run of seed s, and shares its data order and initialisation with the
other students of seed s, so per-seed differences are what the intervals are over. Notebook 06 draws these
frames and states :func:`conclusions`; :func:`summarize` prints the README's table.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from transmix.config.run import METHODS
from transmix.config.run_id import ALONE, Student, parse_point
from transmix.reporting.stats import t_interval
from transmix.reporting.verdicts import verdict


def in_order(methods: Iterable[str]) -> list[str]:
    """The methods among ``methods`` in the package's order (none, mixup, cutmix, deit, transmix), ``alone``
    left out."""
    present = set(methods)
    return [m for m in METHODS if m in present]


def is_student(ablation: pd.Series) -> pd.Series:
    """Which rows are a distillation student's, by their ``ablation`` point."""
    return ablation.map(lambda point: isinstance(parse_point(point), Student)).astype(bool)


def students(ours: pd.DataFrame, variant: str = "ema", metric: str = "top1") -> pd.DataFrame:
    """One row per student run: ``teacher`` (its teacher's method, or ``alone``), ``kind`` (``soft T=1``, ``hard``,
    ``alone``), the student's ``method`` and ``seed``, and ``value`` (test top-1 by default)."""
    rows = ours[is_student(ours.ablation) & (ours.suite == "clean") & (ours.metric == metric)]
    rows = rows[rows.variant == variant]
    point = rows.ablation.map(parse_point)
    return rows.assign(teacher=[p.teacher for p in point], kind=[p.label for p in point])[
        ["model", "teacher", "kind", "method", "seed", "value", "n"]
    ].reset_index(drop=True)


def kinds(kd: pd.DataFrame) -> list[str]:
    """The study's kinds in reading order: soft by temperature, then hard (``alone`` left out)."""
    taught = [k for k in kd.kind.unique() if k != ALONE]
    return sorted(taught, key=lambda k: (k == "hard", float(k.split("=")[1]) if "=" in k else 0.0))


def soft_kinds(kind_order: list[str]) -> list[str]:
    """The soft kinds of :func:`kinds`, by temperature: the lowest first."""
    return [k for k in kind_order if k.startswith("soft")]


def alone_in_every_kind(kd: pd.DataFrame, kind_order: list[str]) -> pd.DataFrame:
    """The taught students, and the students trained alone once in every kind: one panel a kind, each with the
    reference it is judged against."""
    alone = kd[kd.teacher == ALONE]
    return pd.concat([kd[kd.teacher != ALONE]] + [alone.assign(kind=k) for k in kind_order])


def student_table(kd: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Student top-1 as ``mean [low, high]`` over seeds: one row per kind and teacher (the students alone first),
    one column per student method."""
    intervals = kd.groupby(["kind", "teacher", "method"]).value.apply(t_interval, confidence=confidence).unstack()
    cells = intervals.apply(lambda r: f"{r['mean']:.2f} [{r['low']:.2f}, {r['high']:.2f}]", axis=1).unstack("method")
    teaching = in_order(kd.teacher)
    rows = [(ALONE, ALONE)] + [(k, t) for k in kinds(kd) for t in teaching]
    return cells.reindex(pd.MultiIndex.from_tuples(rows)).rename_axis(["kind", "teacher"])[in_order(kd.method)]


def taught_minus_alone(kd: pd.DataFrame) -> pd.DataFrame:
    """Each taught student run with ``value`` = its top-1 minus that of the student of the same method and seed
    trained alone."""
    alone = kd[kd.teacher == ALONE].set_index(["method", "seed"]).value
    taught = kd[kd.teacher != ALONE]
    return taught.assign(
        value=taught.value.to_numpy() - alone.reindex(pd.MultiIndex.from_frame(taught[["method", "seed"]])).to_numpy()
    )


def differences(kd: pd.DataFrame, column: str, treatment: str, baseline: str) -> pd.DataFrame:
    """``treatment - baseline`` of ``column`` (``teacher`` or ``kind``) per seed and every other cell: e.g. a
    TransMix teacher against a deit teacher, per kind, student method and seed."""
    key = [c for c in ("teacher", "kind", "method") if c != column]
    wide = kd[kd.teacher != ALONE].pivot_table(index=[*key, "seed"], columns=column, values="value")
    if not {treatment, baseline} <= set(wide.columns):
        return pd.DataFrame(columns=[*key, "seed", "value"])
    return (wide[treatment] - wide[baseline]).dropna().rename("value").reset_index()


def by_cell(diff: pd.DataFrame, by: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """A t-interval over seeds of per-seed differences, per group of ``by``."""
    return diff.groupby(by).value.apply(t_interval, confidence=confidence).unstack().reset_index()


def against_deit(kd: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Every other teaching method against a deit teacher, per kind and student method (:func:`by_cell` of
    :func:`differences`), ``contrast`` naming it; empty without a deit teacher."""
    teaching = in_order(kd.teacher)
    if "deit" not in teaching:
        return pd.DataFrame()
    parts = [by_cell(differences(kd, "teacher", other, "deit"), ["kind", "method"], confidence)
             .assign(contrast=f"{other} − deit teacher") for other in teaching if other != "deit"]  # fmt: skip
    return pd.concat(parts) if parts else pd.DataFrame()


def temperatures(kd: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Soft distillation at the lowest temperature minus the highest, per teacher and student method; empty for a
    study of one temperature."""
    softs = soft_kinds(kinds(kd))
    if len(softs) < 2:
        return pd.DataFrame()
    return by_cell(differences(kd, "kind", softs[0], softs[-1]), ["teacher", "method"], confidence)


def pooled(diff: pd.DataFrame, confidence: float = 0.95) -> pd.Series:
    """Per-seed differences averaged over every cell of ``diff`` first, then a t-interval over seeds: one number
    for a sentence (cells of one seed share data order and initialisation, so they are not independent)."""
    return t_interval(diff.groupby("seed").value.mean(), confidence)


def teachers(ours: pd.DataFrame, methods: list[str], variant: str = "ema", confidence: float = 0.95) -> pd.DataFrame:
    """The teacher runs (the study's main runs of the teaching methods): top-1, expected calibration error and the
    entropy of their outputs, mean and t-interval over seeds."""
    main = ours[(ours.ablation == "") & (ours.variant == variant) & ours.method.isin(methods)]
    rows = main[((main.suite == "clean") & (main.metric == "top1")) | (main.suite == "calibration")]
    out = rows.groupby(["method", "metric"]).value.apply(t_interval, confidence=confidence).unstack().reset_index()
    return out.assign(method=pd.Categorical(out.method, methods)).sort_values(["metric", "method"])


def conclusions(ours: pd.DataFrame, kd: pd.DataFrame, variant: str = "ema", confidence: float = 0.95) -> list[str]:
    """The page's sentences, each on per-seed differences pooled over the cells they span (:func:`pooled`): what
    each kind brings against the student alone; each teaching method against a deit teacher, per kind; the lowest
    temperature against the highest, per teacher and for MIX-KD's case (mixed teachers and mixed students); the
    teachers' output entropy and calibration against deit's; and the best cell."""
    teaching, kind_order = in_order(kd.teacher), kinds(kd)
    softs = soft_kinds(kind_order)
    lines = []
    every = taught_minus_alone(kd)
    for kind in kind_order:
        r = pooled(every[every.kind == kind], confidence)
        lines.append(verdict(f"{kind} distillation, any teacher and student, against the student alone", r["mean"],
                             r.low, r.high, int(r.n), level=confidence))  # fmt: skip
    if "deit" in teaching:
        for other in [m for m in teaching if m != "deit"]:
            diff = differences(kd, "teacher", other, "deit")
            for kind in kind_order:
                r = pooled(diff[diff.kind == kind], confidence)
                lines.append(verdict(f"{kind}: a {other} teacher against a deit teacher (all students)", r["mean"],
                                     r.low, r.high, int(r.n), level=confidence))  # fmt: skip
    if len(softs) > 1:
        diff = differences(kd, "kind", softs[0], softs[-1])
        for teacher in teaching:
            r = pooled(diff[diff.teacher == teacher], confidence)
            lines.append(verdict(f"{teacher} teacher: {softs[0]} against {softs[-1]} (all students)", r["mean"],
                                 r.low, r.high, int(r.n), level=confidence))  # fmt: skip
        r = pooled(diff[(diff.teacher != "none") & (diff.method != "none")], confidence)
        lines.append(verdict(f"MIX-KD's case, mixed teachers and mixed students: {softs[0]} against {softs[-1]}",
                             r["mean"], r.low, r.high, int(r.n), level=confidence))  # fmt: skip
    main = ours[(ours.ablation == "") & (ours.variant == variant) & ours.method.isin(teaching)]
    for metric, unit in (("entropy", "nats"), ("ece", "points of ECE")):
        rows = main[(main.suite == "calibration") & (main.metric == metric)].pivot_table(
            index="seed", columns="method", values="value"
        )
        for other in [m for m in teaching if m != "deit"] if "deit" in rows else []:
            r = t_interval(rows[other] - rows["deit"], confidence)
            lines.append(verdict(f"teacher output {metric}: {other} − deit", r["mean"], r.low, r.high, int(r.n),
                                 unit=unit, level=confidence))  # fmt: skip
    means = kd.groupby(["kind", "teacher", "method"]).value.mean()
    kind, teacher, method = means.idxmax()
    lines.append(f"Highest mean student top-1: {method} student, {teacher} teacher, {kind} ({means.max():.2f}%).")
    return lines


def _ci(row: pd.Series) -> str:
    return f"{row['mean']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]".replace("-", "−")


def summarize(ours: pd.DataFrame) -> str:
    """The README's distillation table: student top-1 (EMA) per kind and teacher, for each student method, as the
    change against the student trained alone (paired by seed, 95% t-interval), with the alone row's mean."""
    kd = students(ours)
    if kd.empty:
        return ""
    methods = in_order(kd.method)
    gains = by_cell(taught_minus_alone(kd), ["kind", "teacher", "method"]).set_index(["kind", "teacher", "method"])
    alone = kd[kd.teacher == ALONE].groupby("method").value.agg(["mean", "std"])
    model, n = kd.model.iloc[0], int(kd.seed.nunique())
    parts = [f"Distillation: student {model} (EMA weights), top-1 (%) on {_joined(kd.n)} test images. The first row is "
             f"the student trained alone (mean ± sd over {n} seeds); every other row the change a teacher brings, "
             "paired by seed, 95% t-interval:", "",
             "| kind | teacher | " + " | ".join(f"student {m}" for m in methods) + " |",
             "|---|---|" + "---|" * len(methods),
             "| alone | | " + " | ".join(f"{alone.loc[m, 'mean']:.2f} ± {alone.loc[m, 'std']:.2f}" for m in methods)
             + " |"]  # fmt: skip
    for kind in kinds(kd):
        for teacher in in_order(kd[kd.kind == kind].teacher):
            cells = [_ci(gains.loc[(kind, teacher, m)]) if (kind, teacher, m) in gains.index else "" for m in methods]
            parts.append(f"| {kind} | {teacher} | " + " | ".join(cells) + " |")
    return "\n".join(parts) + "\n"


def _joined(values: pd.Series) -> str:
    return ", ".join(str(int(v)) for v in sorted(values.dropna().unique()))
