"""Real training on real Fashion-MNIST images: run directory, resume, evaluation, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from transmix.config import from_dict
from transmix.evaluate import clean
from transmix.train import CHECKPOINT, FINAL, HISTORY, RESOLVED, TrainingError, train

pytestmark = pytest.mark.slow


def tiny(root, **changes):
    values = dict(
        data_dir=str(root),
        train_subset=256,
        val_subset=128,
        epochs=2,
        batch_size=32,
        warmup_epochs=0,
        ema_decay=0.9,
        method="transmix",
        device="cpu",
    )
    return from_dict({**values, **changes})


def test_run_directory_contents(fashion_root, tmp_path) -> None:
    cfg = tiny(fashion_root)
    final = train(cfg, tmp_path / "run", progress=False)
    assert final == tmp_path / "run" / FINAL
    for name in (CHECKPOINT, FINAL, HISTORY, RESOLVED):
        assert (tmp_path / "run" / name).is_file(), name
    history = [json.loads(line) for line in (tmp_path / "run" / HISTORY).read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 <= h["val_top1"] <= 100 for h in history)
    assert sum(h["cutmix_batches"] for h in history) > 0
    resolved = yaml.safe_load((tmp_path / "run" / RESOLVED).read_text())
    assert resolved["config"] == cfg.to_dict() and resolved["config_hash"] == cfg.hash()
    assert resolved["effective"]["steps_per_epoch"] == 8 and resolved["effective"]["lr"] == cfg.lr
    assert {"torch", "timm", "git_sha"} <= set(resolved["environment"])
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)  # no pickled code in checkpoints
    assert state["epoch"] == 2


def test_resumed_run_equals_uninterrupted(fashion_root, tmp_path) -> None:
    cfg = tiny(fashion_root, epochs=3)
    train(cfg, tmp_path / "whole", progress=False)
    assert train(cfg, tmp_path / "split", stop_after=1, progress=False).name == CHECKPOINT
    assert not (tmp_path / "split" / FINAL).exists()
    train(cfg, tmp_path / "split", progress=False)  # resumes after epoch 1
    whole = torch.load(tmp_path / "whole" / FINAL, weights_only=True)
    split = torch.load(tmp_path / "split" / FINAL, weights_only=True)
    for key in ("model", "ema"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, split[key][name]), f"{key}.{name} differs after resume"
    h_whole = [json.loads(x) for x in (tmp_path / "whole" / HISTORY).read_text().splitlines()]
    h_split = [json.loads(x) for x in (tmp_path / "split" / HISTORY).read_text().splitlines()]
    assert [h["val_top1"] for h in h_whole] == [h["val_top1"] for h in h_split]


def test_methods_differ_only_in_labels(fashion_root, tmp_path) -> None:
    # deit and transmix with one seed see the same images and boxes; only CutMix labels differ.
    h = {}
    for method in ("deit", "transmix"):
        train(tiny(fashion_root, method=method, epochs=1), tmp_path / method, progress=False)
        h[method] = json.loads((tmp_path / method / HISTORY).read_text())
    assert h["deit"]["cutmix_batches"] == h["transmix"]["cutmix_batches"] > 0
    assert h["deit"]["lam_area_mean"] == pytest.approx(h["transmix"]["lam_area_mean"])
    assert h["deit"]["lam_label_mean"] == pytest.approx(h["deit"]["lam_area_mean"])
    assert h["transmix"]["lam_label_mean"] != pytest.approx(h["transmix"]["lam_area_mean"], abs=1e-6)
    # w = 0.5: the label weight is the mean of the area's and the attention's; the gap is per sample, so at least
    # the gap of the means
    t = h["transmix"]
    assert t["lam_label_mean"] == pytest.approx((t["lam_area_mean"] + t["lam_attn_mean"]) / 2)
    assert t["lam_gap_mean"] >= abs(t["lam_attn_mean"] - t["lam_area_mean"]) - 1e-9 and t["lam_gap_mean"] > 0
    assert h["deit"]["lam_attn_mean"] is None and h["deit"]["lam_gap_mean"] is None


def test_other_config_in_run_dir_is_refused(fashion_root, tmp_path) -> None:
    train(tiny(fashion_root, epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match=r"another config.*'lr'"):
        train(tiny(fashion_root, epochs=1, lr=0.01), tmp_path / "run", progress=False)


def test_evaluate_rows(fashion_root, tmp_path) -> None:
    train(tiny(fashion_root, epochs=1, study="s1"), tmp_path / "m__transmix__s0", progress=False)
    rows = clean(tmp_path / "m__transmix__s0", device="cpu")
    history = rows[rows.suite == "history"]  # one epoch: loss, val top-1 raw and EMA, lambdas, throughput
    assert set(history.level) == {1} and (history.n.isna() | (history.n == 128)).all()
    assert sorted(zip(history.variant, history.metric, strict=True))[:2] == [
        ("ema", "val_top1"),
        ("raw", "images_per_second"),
    ]
    df = rows[rows.suite == "clean"]
    assert sorted(zip(df.variant, df.metric, strict=True)) == [
        ("ema", "top1"),
        ("ema", "top5"),
        ("raw", "top1"),
        ("raw", "top5"),
    ]
    assert (df.n == 10000).all() and (df.study == "s1").all() and (df.source == "ours").all()
    top = df.set_index(["variant", "metric"])["value"]
    assert top["raw", "top1"] <= top["raw", "top5"] <= 100


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "transmix.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_errors_are_clear(fashion_root, tmp_path) -> None:
    bad = cli("train", "--out", str(tmp_path / "r"), "--set", "mixup-switch-prob=0.8")
    assert bad.returncode == 2 and "did you mean `switch_prob`" in bad.stderr and "Traceback" not in bad.stderr
    odd = cli("train", "--out", str(tmp_path / "r"), "--set", "batch_size=33")
    assert odd.returncode == 2 and "batch_size=33 is odd" in odd.stderr
    missing = cli("train", "--out", str(tmp_path / "r"), "--set", f"data_dir={tmp_path / 'nowhere'}")
    assert missing.returncode == 1 and "transmix data" in missing.stderr
    unfinished = cli("evaluate", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.csv"))
    assert unfinished.returncode == 1 and "has not finished" in unfinished.stderr
    helped = cli("train", "--help")
    assert helped.returncode == 0 and "switch_prob" in helped.stdout and "area_weight" in helped.stdout
