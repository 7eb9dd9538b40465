"""The tidy results schema: one long table, one row per measured (or published) number.

Every table and figure is a filter and pivot of this table; the analyses of :mod:`transmix.reporting` read it.
Published numbers live once, in ``paper.csv`` beside this module, in the same schema with ``source = paper``.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import pandas as pd

from transmix.errors import Failure
from transmix.records.atomic import atomic_open

COLUMNS: tuple[str, ...] = (
    "study",
    "run_id",
    "dataset",
    "model",
    "method",
    "ablation",
    "seed",
    "epochs",
    "suite",
    "setting",
    "level",
    "variant",
    "metric",
    "value",
    "n",
    "source",
    "reference",
    "config_hash",
    "git_sha",
    "package_version",
    "lock",
)
KEY: tuple[str, ...] = ("study", "run_id", "suite", "setting", "level", "variant", "metric", "source")
# A suite's protocol point: `setting` names it (a corruption, an attack), `level` measures it (a drop ratio, a grid
# size, an epsilon, a severity). Rows without one (clean accuracy) leave them empty.
# `ablation` names the ablation point a run belongs to; empty for a study's main runs and for published rows.
# `lock` names the locked stack a run was made on (transmix.records.provenance.stack); tables made before the lock
# have none.
OPTIONAL = {"setting": "", "level": float("nan"), "ablation": "", "lock": ""}
OPTIONAL_TEXT = ("setting", "ablation", "lock")
SOURCES = ("ours", "paper")
_TEXT = (
    "setting",
    "ablation",
    "study",
    "run_id",
    "dataset",
    "model",
    "method",
    "suite",
    "variant",
    "metric",
    "source",
    "reference",
    "config_hash",
    "git_sha",
    "package_version",
    "lock",
)


class SchemaError(Failure, ValueError):
    """A results table does not follow the schema; the message names the column and rows."""


def validate(df: pd.DataFrame) -> pd.DataFrame:
    """Check columns, types and keys; returns the table with columns in schema order.

    Raises:
        SchemaError: naming the first problem found.
    """
    df = df.assign(**{c: v for c, v in OPTIONAL.items() if c not in df.columns})
    missing = [c for c in COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in COLUMNS]
    if missing or extra:
        raise SchemaError(f"results columns differ from the schema: missing {missing}, unexpected {extra}")
    df = df.loc[:, list(COLUMNS)].copy()
    bad_source = ~df["source"].isin(SOURCES)
    if bad_source.any():
        raise SchemaError(f"source must be one of {SOURCES}; got {sorted(df.loc[bad_source, 'source'].unique())}")
    for col in ("study", "run_id", "model", "method", "suite", "variant", "metric"):
        empty = df[col].isna() | (df[col].astype(str).str.len() == 0)
        if empty.any():
            raise SchemaError(f"column {col} is empty in {int(empty.sum())} row(s), e.g. {df[empty].iloc[0].to_dict()}")
    df["value"] = pd.to_numeric(df["value"], errors="raise").astype(float)
    df["level"] = pd.to_numeric(df["level"], errors="raise").astype(float)
    for col in OPTIONAL_TEXT:  # CSV reads an empty cell as NA; these are "" when absent
        df[col] = df[col].astype("string").fillna("")
    ours = df["source"] == "ours"
    if df.loc[ours, "value"].isna().any():
        raise SchemaError("a measured (source=ours) row has no value")
    for col in ("seed", "epochs", "n"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("Int64")
    for col in _TEXT:
        df[col] = df[col].astype("string")
    paper_no_ref = (df["source"] == "paper") & (df["reference"].isna() | (df["reference"].str.len() == 0))
    if paper_no_ref.any():
        raise SchemaError("every published (source=paper) row needs a reference")
    dup = df.duplicated(list(KEY), keep=False)
    if dup.any():
        raise SchemaError(f"{int(dup.sum())} rows share a key {KEY}, e.g. {df[dup].iloc[0][list(KEY)].to_dict()}")
    return df.reset_index(drop=True)


def frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows (dicts with every column) -> validated table."""
    return validate(pd.DataFrame(list(rows), columns=list(COLUMNS)))


def read(path: str | Path) -> pd.DataFrame:
    """Read and validate a results CSV."""
    return validate(pd.read_csv(path, dtype={col: str for col in _TEXT}))


def write(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write atomically: a crash leaves the old file or the new one, never half of one."""
    df = validate(df)
    with atomic_open(path, "w", newline="") as fh:
        df.to_csv(fh, index=False)
    return Path(path)


def paper() -> pd.DataFrame:
    """The published numbers (``paper.csv``, each row citing its source in ``reference``), ``source = paper``;
    unknown cells are NA with a note."""
    with resources.files("transmix").joinpath("paper.csv").open() as fh:
        return read(fh)


def read_run_table(path: str | Path) -> pd.DataFrame:
    """A per-run (or per-point) table, checked whole: what a later step would silently build on if it were cut.

    Raises:
        SchemaError: naming the file, when it is empty, does not parse, breaks the schema, has a measured row
            without its provenance (a row cut in the middle), or lacks rows its run must have (see
            :func:`missing_rows`). The message says how to make it again.
    """
    again = "delete it and run snakemake again: the job that writes it runs again"
    try:
        df = read(path)
    except (SchemaError, ValueError, pd.errors.EmptyDataError) as err:
        raise SchemaError(f"{path} is not a complete results table ({err}); {again}") from None
    ours = df[df["source"] == "ours"]
    cut = ours[["config_hash", "git_sha", "package_version"]].isna().any(axis=1) | ours["n"].isna() & (
        ~ours["suite"].isin(["history", "best_epoch"])  # per-epoch validation: n is val_subset, or none given
    )
    if ours.empty or cut.any():
        what = "no measured rows" if ours.empty else f"{int(cut.sum())} row(s) cut short (no provenance)"
        raise SchemaError(f"{path} holds {what}; {again}")
    gaps = missing_rows(ours)
    if gaps:
        raise SchemaError(f"{path} lacks rows its runs must have ({'; '.join(gaps[:3])}); {again}")
    return df


def check_run_tables(paths: Iterable[str | Path]) -> str:
    """Every per-run table checked whole (:func:`read_run_table`), before a step that would replace the study's
    table starts; a one-line summary."""
    paths = list(paths)
    rows = sum(len(read_run_table(path)) for path in paths)
    return f"{len(paths)} tables checked whole, {rows} rows\n"


EVERY_EPOCH = ("train_loss", "images_per_second")  # history metrics that every epoch records


def missing_rows(ours: pd.DataFrame) -> list[str]:
    """What is missing from the measured rows of runs evaluated here (those with ``clean`` or ``history`` rows): a
    history row per epoch of what every epoch records (the loss and the speed), the last epoch's validation, and
    top-1 and top-5 of every variant the history validated. Validation skips epochs under ``val_every``, and the
    label weights are empty in an epoch that drew no CutMix batch, so neither is asked of every epoch."""
    gaps = []
    for run_id, rows in ours.groupby("run_id"):
        history, clean = rows[rows["suite"] == "history"], rows[rows["suite"] == "clean"]
        if history.empty and clean.empty:
            continue  # a robustness table: its points depend on its protocol
        last = int(rows["epochs"].iloc[0])
        for metric, points in history.groupby("metric"):
            have = set(points["level"].astype(int))
            want = set(range(1, last + 1)) if metric in EVERY_EPOCH else {last} if metric == "val_top1" else set()
            if not want <= have:
                gaps.append(f"{run_id}: history {metric} lacks epochs {sorted(want - have)}")
        variants = set(history.loc[history["metric"] == "val_top1", "variant"]) or {"raw"}
        for variant in sorted(variants):
            have = set(clean.loc[clean["variant"] == variant, "metric"])
            if not {"top1", "top5"} <= have:
                gaps.append(f"{run_id}: clean {variant} lacks {sorted({'top1', 'top5'} - have)}")
        if history.empty:
            gaps.append(f"{run_id}: no history rows")
    return gaps


def collect(paths: Iterable[str | Path], include_paper: bool = True, onto: str | Path | None = None) -> pd.DataFrame:
    """One study table: every per-run CSV (each checked whole, :func:`read_run_table`), plus the published rows.

    ``onto``: a study table the new runs are added to, as when runs are added to a committed study whose run
    folders were not kept; a run it already holds is replaced by its new rows, and its published rows are kept
    (not added twice)."""
    parts = [read_run_table(p) for p in paths]
    if onto is not None:
        base = read(onto)
        new = {run for part in parts for run in part.run_id}  # the runs measured again
        parts.insert(0, base[~(base.run_id.isin(new) & (base.source == "ours"))])
        include_paper = include_paper and not (base.source == "paper").any()
    if include_paper:
        parts.append(paper())
    if not parts:
        raise SchemaError("nothing to collect: no result files given")
    return validate(pd.concat(parts, ignore_index=True))
