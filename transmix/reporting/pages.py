"""What every rendered notebook says beside its figures: the setup it shows, and a study's headline tables.

Reviewers read the HTML pages, not the code (the pages hide it). So each page opens with the setup of the runs it
shows, read from the runs' own ``config.resolved.yaml`` (the config as trained, with the versions that trained it),
and ends with sentences picked by the intervals (:mod:`.verdicts`). :func:`summarize` prints a study's headline
tables for the README (``transmix summarize``) from its table alone, with the same functions the pages use
(:mod:`.suites`, :mod:`.ablations`, :mod:`.distillation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from transmix.config.run_id import PublishedId
from transmix.records.layout import RESOLVED
from transmix.reporting import ablations, suites
from transmix.reporting.distillation import is_student
from transmix.reporting.distillation import summarize as summarize_distillation
from transmix.reporting.stats import paired

# The settings a reader needs to place a result: (label, key of the resolved config or of its "effective" part).
SETTINGS = (
    ("dataset", "dataset"),
    ("model", "model"),
    ("training images", "train_images"),
    ("epochs (incl. cooldown)", "total_epochs"),
    ("batch size", "batch_size"),
    ("peak lr", "lr"),
    ("mixup / cutmix alpha", "alphas"),
    ("P(CutMix) when both", "switch_prob"),
    ("EMA decay", "ema_decay"),
)


def setup(measured: pd.DataFrame, runs_dir: str | Path | None, variant: str, study_config: str | Path | None = None,
          students: bool = False, **page: Any) -> pd.DataFrame:  # fmt: skip
    """One column per model and method of the study's main runs, one row per setting: what was trained, on what,
    evaluated on how many images, with which seeds, code and versions; ``page`` adds the page's own parameters
    (weights shown, confidence, ...). ``students``: the distillation students' runs instead, one column per
    student model and method.

    The settings come from the first of the runs' folders that is there (the table says how many are, when not all).
    Where the folders are gone (a table rendered again elsewhere), a ``study_config`` gives them as that file
    resolves them now, and the table says so; without either they read "not recorded"."""
    main = measured[(measured.ablation == "") & measured.suite.isin(["clean"])]
    if students:
        main = measured[is_student(measured.ablation) & measured.suite.isin(["clean"])]
    study = _study(study_config)
    columns = {}
    for (model, method), runs in main.groupby(["model", "method"], sort=False):
        ids = list(dict.fromkeys(runs.run_id))
        kept = [run for run in ids if runs_dir and (Path(runs_dir) / run / RESOLVED).exists()]
        first = resolved(runs_dir, kept[0]) if kept else None  # the first run whose folder is there
        source = "the runs' config.resolved.yaml" + ("" if len(kept) == len(ids) else
                                                      f" ({len(kept)} of {len(ids)} run folders kept)")  # fmt: skip
        if first is None and study is not None:
            first, source = _from_study(study, runs.run_id.iloc[0]), f"{study_config} (the run folders were not kept)"
        values: dict[str, Any] = {label: setting(first, key) for label, key in SETTINGS}
        values["settings read from"] = source if first is not None else "not recorded"
        values.update(dataset=runs.dataset.iloc[0], model=model)
        values["test images evaluated"] = _joined(runs.n.dropna().astype(int))
        values["seeds"] = _joined(runs.seed.astype(int))
        env = first.get("environment", {}) if first else {}
        values["torch / timm"] = f"{env['torch']} / {env['timm']}" if env else "not recorded"
        values["package, revision"] = f"{runs.package_version.iloc[0]}, {_joined(runs.git_sha.str[:7])}"
        values.update({name: str(value) for name, value in page.items()})
        values["weights shown"] = variant
        columns[f"{model}\n{method}" if main.model.nunique() > 1 else method] = values
    return pd.DataFrame(columns).rename_axis("setting")


def _study(path: str | Path | None) -> Any:
    if not path:
        return None
    from transmix.config.study import Study

    return Study(yaml.safe_load(Path(path).read_text()))


def _from_study(study: Any, run_id: str) -> dict[str, Any]:
    """A run's settings as the study file resolves them, in the shape of ``config.resolved.yaml``."""
    from transmix.config.run import from_dict

    config = from_dict(study.settings(run_id)).to_dict()
    return {"config": config, "effective": {"train_images": config.get("train_subset") or "all"}}


def resolved(runs_dir: str | Path | None, run_id: str) -> dict[str, Any] | None:
    """A run's ``config.resolved.yaml`` (the config as trained, what it amounted to, the versions); ``None`` when its
    folder is not there."""
    path = Path(runs_dir) / run_id / RESOLVED if runs_dir else None
    return yaml.safe_load(path.read_text()) if path is not None and path.exists() else None


def setting(record: dict[str, Any] | None, key: str) -> Any:
    """One setting of a :func:`resolved` record: a config key, or what it amounted to (``train_images``, ...)."""
    if record is None:
        return "not recorded"
    config, effective = record["config"], record.get("effective", {})
    if key == "alphas":
        return f"{config['mixup_alpha']} / {config['cutmix_alpha']}"
    if key == "total_epochs":
        return config["epochs"] + config.get("cooldown_epochs", 0)
    return effective.get(key, config.get(key, "not recorded"))


def _joined(values: pd.Series) -> str:
    return ", ".join(str(v) for v in sorted(values.unique()))


def published_gains(paper: pd.DataFrame, treatment: str = "transmix", baseline: str = "deit") -> pd.DataFrame:
    """``treatment - baseline`` top-1 for every published pair of rows (same source, dataset, model and epochs),
    with where it was reported: the rungs of the scale ladder that other people measured."""
    rows = paper[(paper.suite == "clean") & (paper.metric == "top1")]
    rows = rows.assign(source=rows.run_id.map(lambda run: PublishedId.parse(run).source))
    keys = ["source", "dataset", "model", "epochs"]
    wide = rows.pivot_table(index=keys, columns="method", values="value", aggfunc="first", sort=False)
    if not {treatment, baseline} <= set(wide.columns):
        return pd.DataFrame(columns=[*keys, "difference", "reference"])
    gains = (wide[treatment] - wide[baseline]).dropna().rename("difference").reset_index()
    reference = rows[rows.method == treatment].drop_duplicates(keys).set_index(keys).reference
    return gains.join(reference, on=keys)


def method_order(methods: Any, baseline: str) -> list[str]:
    """The order every page lists methods in (and colours them by): the baseline, transmix, then the rest."""
    return sorted(set(methods), key=lambda m: (m != baseline, m != "transmix", m))


def _ci(row: pd.Series) -> str:
    if row["n"] < 2:
        return f"{row['mean']:+.2f} (one seed: no interval)".replace("-", "−")
    return f"{row['mean']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]".replace("-", "−")


def _every_method(main: pd.DataFrame, baseline: str) -> list[str]:
    """Where every method of the study stands (EMA weights), for models trained with more than two: each method's
    top-1 and its difference from ``baseline``, paired by seed. No lines for a study of two methods."""
    ema = main[main.variant == "ema"]
    models = [m for m, rows in ema.groupby("model") if rows.method.nunique() > 2]
    if not models:
        return []
    lines = ["", f"Every method, EMA weights: top-1 (%) mean ± sd over seeds; method − {baseline} paired by seed, 95% "
             "t-interval:", "", f"| model | method | seeds | top-1 | method − {baseline} [95% CI] |",
             "|---|---|---|---|---|"]  # fmt: skip
    for model in models:
        rows = ema[ema.model == model]
        spread = rows.groupby("method").value.agg(["mean", "std", "count"]).sort_values("mean", ascending=False)
        for method, stat in spread.iterrows():
            diff = paired(rows, ["model"], method, baseline)
            cell = "(baseline)" if method == baseline else _ci(diff.iloc[0]) if len(diff) else ""
            top1 = f"{stat['mean']:.2f}" + (f" ± {stat['std']:.2f}" if stat["count"] > 1 else "")
            lines.append(f"| {model} | {method} | {int(stat['count'])} | {top1} | {cell} |")
    return lines


def summarize(table: pd.DataFrame, treatment: str = "transmix", baseline: str = "deit") -> str:
    """A study's headline tables as markdown, from its tidy table alone: top-1 per method with the paired difference,
    where a model trained more methods each one's top-1 and difference from the baseline,
    each robustness suite's paired difference (mean over the suite's levels that change the image), each
    ablation point's change against the study's own runs, and the distillation students
    (:func:`transmix.reporting.distillation.summarize`). The README shows these as printed."""
    from transmix.records.results import SchemaError

    ours = table[table.source == "ours"]
    clean = ours[(ours.suite == "clean") & (ours.metric == "top1")]
    if clean.empty:
        raise SchemaError("the table holds no measured top-1 (suite clean): give a study's results.csv")
    main = clean[clean.ablation == ""]
    parts = [f"Top-1 (%) on {_joined(main.n.astype(int))} test images, mean ± sd over seeds; {treatment} − "
             f"{baseline} paired by seed, 95% t-interval:", "",
             f"| model | weights | {baseline} | {treatment} | {treatment} − {baseline} [95% CI] "
             f"| seeds {treatment} won |", "|---|---|---|---|---|---|"]  # fmt: skip
    spread = main.groupby(["model", "variant", "method"]).value.agg(["mean", "std"])
    for (model, variant), row in paired(main, ["model", "variant"], treatment, baseline).iterrows():
        a, b = spread.loc[(model, variant, baseline)], spread.loc[(model, variant, treatment)]
        parts.append(f"| {model} | {variant} | {a['mean']:.2f} ± {a['std']:.2f} | {b['mean']:.2f} ± {b['std']:.2f} | "
                     f"{_ci(row)} | {int(row.wins)} of {int(row.n)} |")  # fmt: skip
    parts += _every_method(main, baseline)
    means = suites.suite_means(suites.suite_rows(ours, "ema"))
    if len(means):
        name = means.suite.where(means.metric == "top1", means.suite + " " + means.metric)  # one column a metric
        diff = paired(means.assign(suite=name), ["model", "suite"], treatment, baseline).reset_index()
        columns = sorted(diff.suite.unique())
        parts += ["", f"Robustness, EMA weights: each suite's mean over its levels that change the image, per seed; "
                  f"{treatment} − {baseline} paired by seed, 95% t-interval:", "",
                  "| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]  # fmt: skip
        for model, rows in diff.groupby("model"):
            cells = rows.set_index("suite")
            parts.append(f"| {model} | " + " | ".join(_ci(cells.loc[c]) if c in cells.index else "" for c in columns)
                         + " |")  # fmt: skip
    changes = ablations.changes(ablations.top1(ours, "ema"))
    if len(changes):
        parts += ["", "Ablations, EMA weights: change against the study's own runs, paired by seed, 95% t-interval:",
                  "", "| point | model | method | seeds | change [95% CI] |", "|---|---|---|---|---|"]  # fmt: skip
        for _, row in changes.iterrows():
            parts.append(f"| {row.point} | {row.model} | {row.method} | {int(row.n)} | {_ci(row)} |")
    students = summarize_distillation(ours)
    return "\n".join(parts) + "\n" + (f"\n{students}" if students else "")
