"""The pages' setup tables and the published gains: read from the runs and the published table, never typed."""

from __future__ import annotations

import pandas as pd
import yaml

from transmix.records.results import paper
from transmix.reporting.pages import published_gains, setup


def test_published_gains_pair_rows_of_one_source_dataset_model_and_epochs() -> None:
    gains = published_gains(paper())
    deit_s = gains[(gains.source == "transmix-paper") & (gains.model == "DeiT-S")]
    assert deit_s.difference.round(2).tolist() == [0.9]  # 80.7 - 79.8, both rows of transmix/paper.csv
    cifar = gains[(gains.source == "openmixup") & (gains.epochs == 600)]
    assert cifar.difference.round(2).tolist() == [-0.05]  # an independent re-run where TransMix did not help
    assert not gains.difference.isna().any() and (gains.reference.str.len() > 0).all()
    # a model with one published method (PVT-T: TransMix only) has no difference to show
    assert "PVT-T (v1)" not in set(gains.model)


def _rows(run_id: str, method: str, seed: int) -> dict:
    return dict(study="s", run_id=run_id, dataset="fashion_mnist", model="vit_micro_patch4_28", method=method,
                ablation="", seed=seed, suite="clean", n=10000, git_sha="abcdef0123",
                package_version="0.1.0")  # fmt: skip


def test_setup_reads_each_run_config_and_says_what_it_could_not(tmp_path) -> None:
    measured = pd.DataFrame([_rows(f"m__{m}__s{s}", m, s) for m in ("deit", "transmix") for s in (0, 1)])
    run = tmp_path / "m__transmix__s1"  # the second run's folder: the first one's is gone
    run.mkdir()
    config = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "epochs": 7, "cooldown_epochs": 3, "batch_size": 64,
              "lr": 0.002, "switch_prob": 0.5, "ema_decay": 0.99}  # fmt: skip
    resolved = {"config": config, "effective": {"train_images": 60000}, "environment": {"torch": "2.x", "timm": "1.y"}}
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(resolved))
    table = setup(measured, tmp_path, "ema", confidence=0.95)
    assert list(table.columns) == ["deit", "transmix"]
    transmix, deit = table["transmix"], table["deit"]
    assert transmix["epochs (incl. cooldown)"] == 10 and transmix["training images"] == 60000
    assert transmix["mixup / cutmix alpha"] == "0.8 / 1.0" and transmix["torch / timm"] == "2.x / 1.y"
    assert deit["peak lr"] == "not recorded" and deit["torch / timm"] == "not recorded"  # its folder is absent
    assert transmix["seeds"] == "0, 1" and transmix["package, revision"] == "0.1.0, abcdef0"
    assert transmix["settings read from"] == "the runs' config.resolved.yaml (1 of 2 run folders kept)"
    assert transmix["confidence"] == "0.95" and transmix["weights shown"] == "ema"
    assert (setup(measured, None, "raw").loc["peak lr"] == "not recorded").all()


def test_without_run_folders_the_study_file_gives_the_settings_and_says_so(tmp_path) -> None:
    study = tmp_path / "study.yaml"
    values = {"study": "s", "models": ["vit_micro_patch4_28"], "methods": ["deit", "transmix"], "seeds": [0, 1],
              "train": {"epochs": 3, "lr": 0.004, "train_subset": 800}}  # fmt: skip
    study.write_text(yaml.safe_dump(values))
    measured = pd.DataFrame([_rows(f"vit_micro_patch4_28__{m}__s{s}", m, s) for m in ("deit", "transmix")
                             for s in (0, 1)])  # fmt: skip
    table = setup(measured, tmp_path / "gone", "ema", study_config=study)
    assert (table.loc["peak lr"] == 0.004).all() and (table.loc["training images"] == 800).all()
    assert table.loc["settings read from"].str.contains("run folders were not kept").all()
    assert (table.loc["torch / timm"] == "not recorded").all()  # versions live only in the run folders
