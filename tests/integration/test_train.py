"""Real training on real Fashion-MNIST images: run directory, resume, the label per method, evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from transmix.config.run import from_dict
from transmix.data import eval_split
from transmix.evaluation.evaluate import clean
from transmix.records.provenance import LOCK as STACK_LOCK
from transmix.records.provenance import lock_hash
from transmix.training.checkpoint import CHECKPOINT, FINAL, HISTORY, LOCK, RESOLVED
from transmix.training.train import TrainingError, train

pytestmark = pytest.mark.slow
STACK = lock_hash(Path(__file__).resolve().parents[2] / STACK_LOCK)  # the locked stack these tests run on


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


def test_run_directory_contents(finished_run) -> None:
    for name in (CHECKPOINT, FINAL, HISTORY, RESOLVED):
        assert (finished_run / name).is_file(), name
    history = [json.loads(line) for line in (finished_run / HISTORY).read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 <= h["val_top1"] <= 100 for h in history)
    assert sum(h["cutmix_batches"] for h in history) > 0
    resolved = yaml.safe_load((finished_run / RESOLVED).read_text())
    cfg = from_dict(resolved["config"])
    assert resolved["config_hash"] == cfg.hash() and cfg.train_subset == 2048 and cfg.batch_size == 64
    assert resolved["effective"]["steps_per_epoch"] == 32 and resolved["effective"]["lr"] == cfg.lr
    assert {"torch", "timm", "git_sha", "lock"} <= set(resolved["environment"])
    assert resolved["environment"]["lock"].startswith(STACK)  # the locked stack, and what differs
    state = torch.load(finished_run / CHECKPOINT, weights_only=True)  # no pickled code in checkpoints
    assert state["epoch"] == 2 and state["step"] == 0 and state["data"] == {}  # an epoch boundary keeps no order
    final = torch.load(finished_run / FINAL, weights_only=True)
    assert final["config_hash"] == cfg.hash() and final["epochs"] == 2 and final["lock"].startswith(STACK)


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
    train(tiny(fashion_root, epochs=3, val_every=2), tmp_path / "sparse", progress=False)  # validates at 2 and 3
    sparse = torch.load(tmp_path / "sparse" / FINAL, weights_only=True)
    assert all(torch.equal(t, sparse["ema"][name]) for name, t in whole["ema"].items())  # validation trains nothing
    h_sparse = [json.loads(x) for x in (tmp_path / "sparse" / HISTORY).read_text().splitlines()]
    assert [h["val_top1"] for h in h_sparse] == [None, *[h["val_top1"] for h in h_whole[1:]]]
    assert [h["train_loss"] for h in h_sparse] == [h["train_loss"] for h in h_whole]


def test_the_release_schedule_cooldown_and_constant_ema(fashion_root, tmp_path) -> None:
    """The release's schedule: lr stepped once per epoch, 10 cooldown epochs at min_lr after it (here 3 + 2), EMA
    at a constant decay; a run resumed inside the cooldown equals the uninterrupted one."""
    cfg = tiny(fashion_root, epochs=3, cooldown_epochs=2, warmup_epochs=1, sched_on_epochs=True, ema_warmup=False,
               lr=1e-3, warmup_lr=1e-6, min_lr=1e-5)  # fmt: skip
    train(cfg, tmp_path / "whole", progress=False)
    history = [json.loads(x) for x in (tmp_path / "whole" / HISTORY).read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    cosine = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 1 / 3))  # epoch 2: t = 1 of 3, warmup over
    assert [h["lr"] for h in history] == pytest.approx([1e-6, cosine, 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(
        math.pi * 2 / 3)), 1e-5, 1e-5])  # fmt: skip
    assert torch.load(tmp_path / "whole" / FINAL, weights_only=True)["epochs"] == 5  # trained, cooldown included
    assert train(cfg, tmp_path / "split", stop_after=4, progress=False).name == CHECKPOINT
    train(cfg, tmp_path / "split", progress=False)
    whole = torch.load(tmp_path / "whole" / FINAL, weights_only=True)
    split = torch.load(tmp_path / "split" / FINAL, weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(t, split[key][n]) for n, t in whole[key].items()), key


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


def test_fast_path_keys_reach_the_run_and_its_record(fashion_root, tmp_path) -> None:
    # The fused optimizer step and a wait for the device every 4 steps; TF32 is a CUDA setting (nothing on a CPU).
    cfg = tiny(fashion_root, epochs=1, fused=True, sync_every=4, tf32=True)
    train(cfg, tmp_path / "run", progress=False)
    resolved = yaml.safe_load((tmp_path / "run" / RESOLVED).read_text())
    assert {k: resolved["config"][k] for k in ("fused", "sync_every", "tf32", "compile")} == {
        "fused": True, "sync_every": 4, "tf32": True, "compile": False}  # fmt: skip
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert state["optimizer"]["param_groups"][0]["fused"] is True
    assert math.isfinite(json.loads((tmp_path / "run" / HISTORY).read_text())["train_loss"])


def test_other_config_in_run_dir_is_refused(finished_run) -> None:
    def files() -> dict[str, int]:  # train.lock aside: every trainer that opens the folder takes it
        return {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir() if p.name != LOCK}

    before = files()
    cfg = from_dict(yaml.safe_load((finished_run / RESOLVED).read_text())["config"])
    with pytest.raises(TrainingError, match=r"another config.*'lr'"):
        train(cfg.replace(lr=0.01), finished_run, progress=False)
    assert files() == before, "the run was left as it was"


def test_evaluate_rows(finished_run) -> None:
    rows = clean(finished_run, device="cpu", images=2000)  # the first 2000 test images (0, the default: all)
    history = rows[rows.suite == "history"]  # per epoch: loss, val top-1 raw and EMA, lambdas, throughput
    assert set(history.level) == {1, 2} and (history.n.isna() | (history.n == 128)).all()
    assert sorted(zip(history.variant, history.metric, strict=True))[:3] == [
        ("ema", "val_top1"),
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
    assert (df.n == 2000).all() and (df.study == "shared").all() and (df.source == "ours").all()
    assert len(eval_split(from_dict(yaml.safe_load((finished_run / RESOLVED).read_text())["config"]), 0)) == 10000
    assert (df.run_id == finished_run.name).all() and df["lock"].str.startswith(STACK).all()
    top = df.set_index(["variant", "metric"])["value"]
    assert top["raw", "top1"] <= top["raw", "top5"] <= 100
    # the best per-epoch validation top-1 of each variant, with the epoch that reached it (the release's number)
    best = rows[rows.suite == "best_epoch"].set_index("variant")
    val = history[history.metric == "val_top1"]
    for variant, points in val.groupby("variant"):
        top = points.sort_values(["value", "level"], ascending=[False, True]).iloc[0]
        assert (best.loc[variant, "value"], best.loc[variant, "level"]) == (top.value, top.level)
    assert set(best.metric) == {"top1"} and (best.n == 128).all()
    first = clean(finished_run, device="cpu", images=500, pairs=0)  # the first 500 test images, no pairs
    assert (first[first.suite == "clean"].n == 500).all() and not (first.suite == "attention_area").any()
    # attention against area on 500 CutMix pairs per variant: the statistics notebook 04 shows for every run
    pairs = rows[rows.suite == "attention_area"].set_index(["variant", "metric"])["value"]
    assert sorted(pairs.index) == [(v, m) for v in ("ema", "raw") for m in ("attn_below_area", "correlation",
                                                                             "gap_mean")]  # fmt: skip
    assert (rows[rows.suite == "attention_area"].n == 500).all()
    from transmix.evaluation.pairs import run_pairs

    again = run_pairs(finished_run, 500, seed=1, variant="raw")  # the same pairs, read by hand
    gap = sum(abs(p.lam_attn - p.lam_area) for p in again) / len(again)
    assert pairs["raw", "gap_mean"] == pytest.approx(gap, abs=1e-6) and 0 < pairs["raw", "gap_mean"] < 1
    assert -1 <= pairs["raw", "correlation"] <= 1 and 0 <= pairs["raw", "attn_below_area"] <= 100
