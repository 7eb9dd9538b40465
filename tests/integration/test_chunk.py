"""`transmix chunk` for real on a toy study: a first chunk trains what fits, a second the rest, and nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from transmix.cli import main
from transmix.records.results import read, read_run_table

pytestmark = pytest.mark.slow
RUNS = [f"vit_micro_patch4_28__{method}__s{seed}" for method in ("deit", "transmix") for seed in (0, 1)]


def toy_study(data: Path) -> dict:
    train = dict(data_dir=str(data), train_subset=256, val_subset=64, epochs=1, batch_size=64, warmup_epochs=0)
    return {
        "study": "toy_chunk",
        "models": ["vit_micro_patch4_28"],
        "methods": ["deit", "transmix"],
        "seeds": [0, 1],
        "train": {**train, "device": "cpu"},
        "evaluation": {"images": 500, "pairs": 10},
        "resources": {"train": {"threads": 1, "mem_mb": 2000, "runtime": 10}},
    }


def test_chunks_add_up_to_the_study_without_training_a_run_twice(fashion_root: Path, tmp_path: Path, monkeypatch,
                                                                 capsys) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # results/<study>/... are written where the command runs, as with Snakemake
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_study(fashion_root)))
    common = ["chunk", "--config", str(config), "--parallel", "2", "--threads", "1"]
    tables = {run: Path(f"results/toy_chunk/evaluate/{run}.csv") for run in RUNS}

    # A minute, each run expected to take 0.99 of it: the first two start together, and once they are done too
    # little time is left for another.
    assert main([*common, "--minutes", "1", "--run-minutes", "0.99"]) == 0
    out = capsys.readouterr().out
    first, rest = RUNS[:2], RUNS[2:]
    assert f"2 of 4 done; remaining: {', '.join(rest)}" in out, out
    for run in first:
        assert f"{run}: done in" in out and "top-1" in out
        assert set(read_run_table(tables[run]).run_id) == {run}
        assert Path(f"results/toy_chunk/logs/chunk/{run}.log").is_file()
        assert (Path("results/toy_chunk/train") / run / "final.pt").is_file()
    assert not any(tables[run].exists() for run in rest)
    written = {run: tables[run].stat().st_mtime_ns for run in first}

    # The second chunk trains the rest only, and adds every table to the study's results.csv
    assert main([*common, "--minutes", "3", "--collect"]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 done; remaining: none" in out, out
    assert all(f"{run}: done in" in out for run in rest) and not any(run in out for run in first)
    assert {run: tables[run].stat().st_mtime_ns for run in first} == written, "a finished run was evaluated again"
    for run in RUNS:
        assert set(read_run_table(tables[run]).run_id) == {run}
    study = read("results/toy_chunk/results.csv")
    assert set(study[study.source == "ours"].run_id) == set(RUNS)

    # A bare machine has only the committed results.csv: its runs are done, nothing starts
    for path in tables.values():
        path.unlink()
    assert main([*common, "--minutes", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 done; remaining: none" in out and "done in" not in out, out
