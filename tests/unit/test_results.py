"""The tidy results schema and the published reference table."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from transmix.records.results import COLUMNS, SchemaError, paper, read, validate, write


def row(**changes) -> dict:
    base = dict(
        study="s",
        run_id="m__deit__s0",
        dataset="fashion_mnist",
        model="m",
        method="deit",
        seed=0,
        epochs=1,
        suite="clean",
        variant="raw",
        metric="top1",
        value=50.0,
        n=100,
        source="ours",
        reference="",
        config_hash="abc",
        git_sha="123",
        package_version="0.1.0",
    )
    return {**base, **changes}


def test_round_trip(tmp_path) -> None:
    df = pd.DataFrame([row(), row(metric="top5", value=90.0)])
    path = write(df, tmp_path / "r.csv")
    back = read(path)
    assert list(back.columns) == list(COLUMNS)
    assert back["value"].tolist() == [50.0, 90.0]
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([row(source="mine")], "source must be one of"),
        ([row(), row()], "share a key"),
        ([row(value=None)], "has no value"),
        ([row(source="paper", reference="")], "needs a reference"),
        ([row(model="")], "column model is empty"),
    ],
)
def test_schema_violations_are_named(rows: list[dict], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        validate(pd.DataFrame(rows))


def test_missing_column_is_named() -> None:
    with pytest.raises(SchemaError, match=r"missing \['git_sha'\]"):
        validate(pd.DataFrame([row()]).drop(columns="git_sha"))


def test_published_numbers() -> None:
    published = paper()
    assert (published.source == "paper").all() and published.reference.str.len().gt(0).all()
    imagenet = published[published.run_id.str.startswith("transmix-paper")].set_index(["model", "method"])["value"]
    assert imagenet[("DeiT-S", "transmix")] == 80.7 and imagenet[("DeiT-S", "deit")] == 79.8
    assert imagenet[("DeiT-B", "transmix")] == 82.4
    assert pd.isna(imagenet[("DeiT-T", "transmix")]), "unconfirmed cells stay NA"


def test_protocol_points_are_part_of_the_key() -> None:
    rows = [row(suite="occlusion", level=0.5), row(suite="occlusion", level=0.9), row(suite="occlusion", level=0.9)]
    with pytest.raises(SchemaError, match="share a key"):
        validate(pd.DataFrame(rows))
    df = validate(pd.DataFrame(rows[:2]))
    assert df["level"].tolist() == [0.5, 0.9] and df["setting"].tolist() == ["", ""]


def test_tables_without_protocol_columns_still_read(tmp_path) -> None:
    # per-run clean-accuracy tables carry no protocol point; both columns take their empty defaults
    pd.DataFrame([row()]).to_csv(tmp_path / "old.csv", index=False)
    df = read(tmp_path / "old.csv")
    assert df["setting"].iloc[0] == "" and pd.isna(df["level"].iloc[0]) and df["ablation"].iloc[0] == ""
    # written and read back, an empty text cell stays "" (CSV would read it as NA, and `== ""` would fail)
    write(df, tmp_path / "new.csv")
    again = read(tmp_path / "new.csv")
    assert (again["ablation"] == "").all() and (again["setting"] == "").all()


def test_atomic_writes_follow_the_umask(tmp_path) -> None:
    # A results folder shared on a cluster: files must be readable by the group when the umask says so.
    from transmix.records.atomic import atomic_open

    previous = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "shared.csv") as fh:
            fh.write("x\n")
        os.umask(0o077)
        with atomic_open(tmp_path / "private.csv") as fh:
            fh.write("x\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.csv").stat().st_mode & 0o777 == 0o600


@pytest.fixture
def run_table(tmp_path):
    """One run's table as `transmix evaluate` writes it: the committed default study's first run."""
    df = read("results/default/results.csv")
    path = tmp_path / "run.csv"
    write(df[df.run_id == "vit_micro_patch4_28__transmix__s0"], path)
    return path


def test_a_cut_run_table_is_refused_naming_the_file(run_table, capsys) -> None:
    from transmix.cli import main
    from transmix.records.results import read_run_table

    # clean top-1/5 of raw and EMA; 8 history metrics x 7 epochs; the best epoch of raw and EMA; attention
    # against area (3 statistics) and calibration (ece, entropy) of raw and EMA
    assert len(read_run_table(run_table)) == 4 + 7 * 8 + 2 + 3 * 2 + 2 * 2
    lines = run_table.read_text().splitlines(keepends=True)
    last_history = max(i for i, line in enumerate(lines) if ",history," in line)
    cases = {
        "head -n 2": "".join(lines[:2]),  # header and one row: what `head` leaves
        "cut mid-row": "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 3],
        "0 bytes": "",
        "history cut": "".join(lines[:last_history] + lines[last_history + 1 :]),  # one epoch of one metric gone
    }
    for case, text in cases.items():
        cut = run_table.with_name(f"{case.replace(' ', '_')}.csv")
        cut.write_text(text)
        with pytest.raises(SchemaError, match=rf"{cut}.*delete it and run snakemake again") as err:
            read_run_table(cut)
        assert main(["collect", "--out", str(run_table.with_name("table.csv")), str(run_table), str(cut)]) == 1, case
        assert str(cut) in capsys.readouterr().err and not run_table.with_name("table.csv").exists()
    assert "lacks epochs" in str(err.value) or "lacks" in str(err.value)


def test_sparse_validation_and_epochs_without_cutmix_are_not_gaps(run_table) -> None:
    """``val_every`` leaves val_top1 empty between validations, and an epoch that drew no CutMix batch has no label
    weights: neither is a cut table. The loss of every epoch and the last validation still are required."""
    from transmix.records.results import read_run_table

    df = read(run_table)
    history = df.suite == "history"
    skipped = history & (df.metric == "val_top1") & df.level.isin([1, 2, 4, 5])  # val_every=3 over 7 epochs
    no_cutmix = history & df.metric.str.startswith("lam_") & (df.level == 2)
    write(df[~(skipped | no_cutmix)], run_table)
    assert len(read_run_table(run_table)) == len(df) - skipped.sum() - no_cutmix.sum()
    for gone, epoch in (("val_top1", 7), ("train_loss", 3)):
        write(df[~(history & (df.metric == gone) & (df.level == epoch))], run_table)
        with pytest.raises(SchemaError, match=rf"history {gone} lacks epochs \[{epoch}\]"):
            read_run_table(run_table)


def test_runs_added_onto_a_study_table_replace_their_old_rows(run_table, tmp_path) -> None:
    from transmix.cli import main

    study = read("results/default/results.csv")
    again = read(run_table).assign(value=lambda d: d.value + 1.0)  # the same run measured again
    other = again.assign(run_id="vit_micro_patch4_28__none__s0", method="none")  # a run the table lacks
    write(again, tmp_path / "again.csv")
    write(other, tmp_path / "other.csv")
    out = tmp_path / "table.csv"
    assert main(["collect", "--onto", "results/default/results.csv", "--out", str(out), str(tmp_path / "again.csv"),
                 str(tmp_path / "other.csv")]) == 0  # fmt: skip
    merged = read(out)
    assert len(merged) == len(study) + len(other)  # the run measured again replaced, the paper rows not doubled
    assert (merged.source == "paper").sum() == (study.source == "paper").sum()
    run = merged[merged.run_id == "vit_micro_patch4_28__transmix__s0"].value.to_numpy()
    assert (run == again.value.to_numpy()).all()
    untouched = study[(study.source == "ours") & (study.run_id != "vit_micro_patch4_28__transmix__s0")]
    assert (untouched.value.to_numpy() == merged[merged.run_id.isin(untouched.run_id)].value.to_numpy()).all()


def test_a_run_is_dirty_only_when_the_code_changed(tmp_path) -> None:
    """A rerun rewrites committed tables and notebooks; that alone must not mark the next runs ``-dirty``."""
    import subprocess

    from transmix.records.provenance import git_sha

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    (tmp_path / "transmix").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "transmix" / "mixing.py").write_text("a = 1\n")
    (tmp_path / "results" / "results.csv").write_text("value\n1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    sha = git_sha(tmp_path / "transmix")
    assert len(sha) == 40
    (tmp_path / "results" / "results.csv").write_text("value\n2\n")
    assert git_sha(tmp_path / "transmix") == sha
    (tmp_path / "transmix" / "mixing.py").write_text("a = 2\n")
    assert git_sha(tmp_path / "transmix") == f"{sha}-dirty"
