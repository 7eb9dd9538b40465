"""The ImageFolder data path, for real: a generated class-folder tree of PNG and JPEG images, the real trainer on
CPU, evaluation, the corrupt-image check, layout errors and the reproducible data order."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from transmix.cli import main
from transmix.config.run import ConfigError, from_dict
from transmix.data import CorruptImage, DatasetMissing, eval_split, train_split
from transmix.data.imagefolder import IMAGE_MEAN, IMAGE_STD, ImageFolderSplit, check_image_folder
from transmix.data.loader import AUTO_WORKERS, DeviceFinish, loader_workers
from transmix.evaluation.evaluate import clean
from transmix.training.checkpoint import CHECKPOINT, FINAL, HISTORY, PREEMPTED_EXIT, RESOLVED
from transmix.training.train import TrainingError, train

CLASSES = ("cat", "dog", "emu")
PER_CLASS = {"train": 8, "val": 4}  # 24 training images: 3 steps of 8 per epoch


def make_tree(root: Path, seed: int = 0) -> Path:
    """3 classes of random-pixel RGB images, PNG and JPEG alternately, of varying sizes (the crop evens them)."""
    rng = np.random.default_rng(seed)
    for split, n in PER_CLASS.items():
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(36, 48, size=2))
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "folder")


def config(root: Path, **changes):
    values = dict(
        dataset="imagefolder",
        data_dir=str(root),
        model="vit_micro_patch4_28",  # built for 3 x 32 x 32 by create_model
        img_size=32,
        aa="rand-m9-mstd0.5-inc1",
        reprob=0.25,
        epochs=1,
        batch_size=8,
        warmup_epochs=0,
        ema_decay=0.9,
        method="transmix",
        switch_prob=1.0,  # every batch CutMix, so the TransMix label path runs
        device="cpu",
    )
    return from_dict({**values, **changes})


@pytest.mark.slow
def test_train_and_evaluate_one_epoch(tree, tmp_path) -> None:
    cfg = config(tree)
    final = train(cfg, tmp_path / "run", progress=False)
    assert final == tmp_path / "run" / FINAL
    for name in (CHECKPOINT, HISTORY, RESOLVED):
        assert (tmp_path / "run" / name).is_file(), name
    history = json.loads((tmp_path / "run" / HISTORY).read_text())
    assert history["epoch"] == 1 and history["cutmix_batches"] == 3
    assert history["lam_label_mean"] != pytest.approx(history["lam_area_mean"], abs=1e-6)  # re-weighted by attention
    assert 0 <= history["val_top1"] <= 100 and history["val_top1_ema"] is not None

    rows = clean(tmp_path / "run", device="cpu")
    df = rows[rows.suite == "clean"]
    assert set(df.variant) == {"raw", "ema"} and set(df.metric) == {"top1", "top5"}
    assert (df.n == 3 * PER_CLASS["val"]).all() and (rows.dataset == "imagefolder").all()
    assert df[df.metric == "top5"].value.eq(100.0).all()  # 3 classes: every label is in the top 5
    history = rows[rows.suite == "history"]  # the one epoch's history, beside the test rows
    assert set(history.level) == {1} and {"train_loss", "val_top1", "lam_attn_mean", "lam_gap_mean"} <= set(
        history.metric
    )


def test_splits_share_the_class_map_and_shapes(tree) -> None:
    (tree / "val" / "dog").rename(tree / "val_dog")  # val without a class must not shift the others' labels
    cfg = config(tree)
    train_set, val_set = train_split(cfg, (0, 1), torch.Generator()), eval_split(cfg)
    assert train_set.num_classes == val_set.num_classes == 3
    x, y = next(iter(val_set.eval_batches(100)))
    assert x.shape == (8, 3, 32, 32) and sorted(set(y.tolist())) == [0, 2]  # cat = 0, emu = 2
    some, again = eval_split(cfg, images=5), eval_split(cfg, images=5)  # a seeded random 5, the same every time
    assert len(some) == 5 and some.samples == again.samples and set(some.samples) < set(val_set.samples)
    x, y = next(train_set.batches(epoch=0, start=0))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_paper_augmentation_keeps_zero_posterize_bits_black(tree) -> None:
    # rand-m9-mstd0.5 reaches magnitude 10 in ~2% of draws: PosterizeIncreasing then keeps 0 bits, which
    # Pillow 13 rejects with ValueError; the transform must give the black image older Pillow gave.
    transform = train_split(config(tree), (0, 1), torch.Generator()).transform
    augment = next(step for step in transform.transforms if hasattr(step, "ops"))
    op = next(op for op in augment.ops if op.name == "PosterizeIncreasing")
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0
    out = op(Image.new("RGB", (8, 8), (200, 100, 50)))
    assert out.mode == "RGB" and out.getextrema() == ((0, 0), (0, 0), (0, 0))
    op.magnitude = 5  # 2 bits: timm's op as before
    assert op(Image.new("RGB", (8, 8), (200, 100, 50))).getpixel((0, 0)) == (192, 64, 0)


def corrupt(tree: Path) -> tuple[Path, Path]:
    """Cut a training JPEG in half (every training image is in each epoch) and add a text file named .jpg."""
    truncated = tree / "train" / "dog" / "00.jpg"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    text = tree / "val" / "emu" / "notes.jpg"
    text.write_text("not an image\n")
    return truncated, text


def test_check_lists_every_corrupt_file(tree, capsys) -> None:
    assert check_image_folder(tree, workers=2) == {"train": 24, "val": 12, "classes": 3}
    truncated, text = corrupt(tree)
    with pytest.raises(CorruptImage) as err:
        check_image_folder(tree, workers=2)
    assert str(truncated) in str(err.value) and str(text) in str(err.value)
    assert "truncated" in str(err.value) and "UnidentifiedImageError" in str(err.value)

    assert main(["data", "--check", "--root", str(tree), "--workers", "2"]) == 1
    stderr = capsys.readouterr().err
    assert "2 of 37 images" in stderr and str(truncated) in stderr and str(text) in stderr
    assert main(["data", "--check", "--root", str(tree / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_training_stops_at_a_corrupt_image_naming_it(tree, tmp_path, workers) -> None:
    truncated, _ = corrupt(tree)
    with pytest.raises(TrainingError) as err:
        train(config(tree, num_workers=workers), tmp_path / "run", progress=False)
    message = str(err.value)
    assert f"{truncated}: OSError" in message and "Traceback" not in message and "transmix data --check" in message
    assert not (tmp_path / "run" / FINAL).exists()


def test_wrong_data_dir_is_a_clear_error(tmp_path, capsys) -> None:
    layout = r"DIR/train/<class>/<image> and DIR/val/<class>/<image>"
    with pytest.raises(DatasetMissing, match=rf"{tmp_path / 'nowhere'} does not exist.*{layout}"):
        train_split(config(tmp_path / "nowhere"), (0, 1), torch.Generator())
    (tmp_path / "flat" / "train").mkdir(parents=True)
    with pytest.raises(DatasetMissing, match=rf"{tmp_path / 'flat'} has no val/ folder; .*{layout}"):
        train_split(config(tmp_path / "flat"), (0, 1), torch.Generator())
    (tmp_path / "flat" / "val").mkdir()
    with pytest.raises(DatasetMissing, match=rf"{tmp_path / 'flat' / 'train'} has no class folders"):
        train_split(config(tmp_path / "flat"), (0, 1), torch.Generator())
    for split in ("train", "val"):
        (tmp_path / "flat" / split / "cat").mkdir()
    with pytest.raises(DatasetMissing, match=rf"{tmp_path / 'flat' / 'train'} holds no images"):
        train_split(config(tmp_path / "flat"), (0, 1), torch.Generator())
    sets = ["dataset=imagefolder", "img_size=32", f"data_dir={tmp_path / 'nowhere'}", "device=cpu"]
    assert main(["train", "--out", str(tmp_path / "run"), *(a for s in sets for a in ("--set", s))]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"img_size": 0}, "img_size=0 must be >= 1"),
        ({"reprob": 1.5}, r"reprob=1.5 must lie in \[0, 1\]"),
        ({"crop_pct": 0.0}, r"crop_pct=0.0 must lie in \(0, 1\]"),
        ({"aa": "rand-x9"}, "aa='rand-x9' is not a timm auto-augment policy"),
        ({"train_subset": 100}, "train_subset=100 applies to dataset=fashion_mnist only"),
        ({"dataset": "fashion_mnist"}, "img_size=32, but dataset=fashion_mnist is 28x28"),
        ({"dataset": "fashion_mnist", "img_size": 28}, "aa='rand-m9-mstd0.5-inc1' applies to dataset=imagefolder"),
    ],
)
def test_bad_values_name_the_key(tree, changes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config(tree, **changes)


def test_data_order_depends_on_seed_and_epoch_only(tree) -> None:
    split = ImageFolderSplit.training(config(tree), (0, 1))
    again = ImageFolderSplit.training(config(tree), (0, 1))
    epoch0 = split.epoch_indices(epoch=0)
    assert len(epoch0) == 24 and sorted(epoch0) == list(range(24))
    assert again.epoch_indices(epoch=0) == epoch0  # a restarted process draws the same order
    assert split.epoch_indices(epoch=1) != epoch0
    assert split.epoch_indices(epoch=0, start=2) == epoch0[16:]  # mid-epoch resume skips done batches
    shards = [
        ImageFolderSplit.training(config(tree, batch_size=4), (rank, 2)).epoch_indices(epoch=0) for rank in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 12 and not set(shards[0]) & set(shards[1])
    assert ImageFolderSplit.training(config(tree, seed=1), (0, 1)).epoch_indices(epoch=0) != epoch0


def test_batches_depend_on_seed_epoch_and_image_only(tree) -> None:
    # Each image is augmented under its own seed: the number of workers and where an epoch starts change nothing,
    # and the trainer's own RNGs are left as they were (stochastic depth must not depend on the data). Random
    # erasing is off here: it runs in the trainer and draws its pixels from the trainer's torch RNG, as it should.
    def first_batches(workers: int, start: int = 0, epoch: int = 0) -> list:
        split = ImageFolderSplit.training(config(tree, num_workers=workers, reprob=0.0), (0, 1))
        return [x for x, _ in split.batches(epoch, start)]

    torch.manual_seed(5)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    alone = first_batches(0)
    after = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1])
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and (before[2] == after[2]).all()
    assert len(alone) == 3 and alone[0].dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(alone, first_batches(2), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(alone[1:], first_batches(1, start=1), strict=True))
    assert not torch.equal(alone[0], first_batches(0, epoch=1)[0])


def test_uint8_batches_are_normalised_on_the_device_as_timm_normalises(tree) -> None:
    from timm.data import create_transform

    cfg = config(tree, aa="", reprob=0.0)
    split = ImageFolderSplit.training(cfg, (0, 1))
    pixels, label = split[0]
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 32, 32)  # what travels to the device
    reference = create_transform(32, mean=IMAGE_MEAN, std=IMAGE_STD).transforms[-1]  # timm's Normalize
    finished, _ = split.finish(pixels[None], torch.tensor([label]), seed=0)
    assert torch.allclose(finished[0], reference(pixels.float() / 255), atol=1e-6)
    erasing = DeviceFinish(IMAGE_MEAN, IMAGE_STD, torch.device("cpu"), reprob=1.0)
    batch = pixels[None].repeat(4, 1, 1, 1)
    once, again = (erasing(batch, torch.zeros(4), seed=7)[0] for _ in range(2))
    assert not torch.allclose(once, finished.expand_as(once))  # every image erased somewhere
    assert torch.equal(once.eq(finished), again.eq(finished))  # the same boxes for the same seed


def test_auto_workers_follow_the_allocation(monkeypatch) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert loader_workers(3) == 3 and loader_workers(AUTO_WORKERS) == max(0, cpus - 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cpus))  # one process per CPU: no CPU left for workers
    assert loader_workers(AUTO_WORKERS) == 0


@pytest.mark.slow
def test_resume_at_an_epoch_boundary_is_bit_identical(tree, tmp_path) -> None:
    # Each image's augmentation is seeded by (seed, epoch, image), in a worker or not, so it repeats after a resume.
    cfg = config(tree, epochs=2, num_workers=1)
    train(cfg, tmp_path / "whole", progress=False)
    assert train(cfg, tmp_path / "split", stop_after=1, progress=False).name == CHECKPOINT
    train(cfg, tmp_path / "split", progress=False)
    whole = torch.load(tmp_path / "whole" / FINAL, weights_only=True)
    split = torch.load(tmp_path / "split" / FINAL, weights_only=True)
    for key in ("model", "ema"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, split[key][name]), f"{key}.{name} differs after resume"
    history = [
        [json.loads(x) for x in (tmp_path / run / HISTORY).read_text().splitlines()] for run in ("whole", "split")
    ]
    assert [h["train_loss"] for h in history[0]] == [h["train_loss"] for h in history[1]]


@pytest.mark.slow
def test_sigterm_to_the_whole_job_saves_mid_epoch_and_resumes(tmp_path) -> None:
    # SLURM signals every process of a job, DataLoader workers too: the trainer must still save at a step boundary.
    # The resumed epoch has the same order, mixing draws and augmentation (seeded per image): the same result.
    tree = tmp_path / "folder"
    for split, n in {"train": 64, "val": 4}.items():  # 192 training images: 24 steps of 8
        for label in CLASSES:
            (tree / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = np.random.default_rng(i).integers(0, 256, size=(36, 36, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(tree / split / label / f"{i:02d}.png")
    sets = ["dataset=imagefolder", f"data_dir={tree}", "img_size=32", "epochs=1", "batch_size=8", "warmup_epochs=0",
            "num_workers=1", "switch_prob=1.0", "device=cpu"]  # fmt: skip
    out, log = tmp_path / "run", tmp_path / "train.log"
    command = [sys.executable, "-m", "transmix.cli", "train", "--out", str(out), "--threads", "1", "--progress", "log",
               *(a for s in sets for a in ("--set", s))]  # fmt: skip
    with log.open("w") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "step 6/24" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)  # the process group this test started: trainer and its worker
    assert proc.wait(timeout=60) == PREEMPTED_EXIT, log.read_text()
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 0 and 6 <= state["step"] < 24 and state["data"] == {}

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at epoch 1, step {state['step']} of 24" in resumed.stderr
    train(from_dict(dict(s.split("=", 1) for s in sets)), tmp_path / "whole", progress=False)
    whole, split = (json.loads((tmp_path / r / HISTORY).read_text()) for r in ("whole", "run"))
    assert split["cutmix_batches"] == whole["cutmix_batches"] == 24
    assert split["lam_area_mean"] == whole["lam_area_mean"]  # the same boxes: generator state restored exactly
    assert split["train_loss"] == whole["train_loss"] and split["lam_attn_mean"] == whole["lam_attn_mean"]
    weights = [torch.load(tmp_path / r / FINAL, weights_only=True)["model"] for r in ("whole", "run")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_bench_loader_reports_images_per_second_by_workers(tree, tmp_path, capsys) -> None:
    out = tmp_path / "loader.csv"
    args = ["bench-loader", "--data-dir", str(tree), "--workers", "1,0", "--img-size", "32", "--batch-size", "2",
            "--batches", "2", "--rounds", "2", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["workers"] for r in rows] == ["0", "1"] and all(float(r["images_per_second"]) > 0 for r in rows)
    assert all(float(r["low"]) <= float(r["images_per_second"]) <= float(r["high"]) for r in rows)
    assert "1 worker(s):" in capsys.readouterr().out
    # 12 batches per epoch cannot hold the 4 that one worker makes ready untimed and 9 rounds of 2
    assert main([*args[:-2], "--rounds", "9"]) == 2
    assert "need 22" in capsys.readouterr().err


def test_every_image_type_is_read_and_nothing_else_becomes_a_class(tree, caplog) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    for suffix, kind in {".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".TIFF": "TIFF"}.items():
        Image.fromarray(pixels, "RGB").save(tree / "train" / "emu" / f"extra{suffix}", format=kind)
    hidden = tree / "train" / ".ipynb_checkpoints"  # a notebook's leftovers: never a class
    hidden.mkdir()
    Image.fromarray(pixels, "RGB").save(hidden / "x-checkpoint.png")
    (tree / "train" / "cat" / "notes.txt").write_text("where these came from\n")
    split = train_split(config(tree), (0, 1), torch.Generator())
    assert split.num_classes == 3 and len(split) == 24 + 4
    assert sum(Path(p).parent.name == "emu" for p, _ in split.samples) == 8 + 4
    assert "1 file(s) in" in caplog.text and "notes.txt" in caplog.text and ".txt" in caplog.text

    (tree / "train" / "fox").mkdir()  # an empty class would be an output never trained
    with pytest.raises(DatasetMissing, match=r"class folder\(s\) \['fox'\] of .*train hold no images"):
        train_split(config(tree), (0, 1), torch.Generator())
    with pytest.raises(DatasetMissing, match="fox"):
        check_image_folder(tree, workers=1)


@pytest.mark.parametrize(
    ("name", "crop", "rotate"),
    [("random", ("bilinear", "bicubic"), (2, 3)), ("bilinear", "bilinear", 2), ("bicubic", "bicubic", 3)],
)
def test_train_interpolation_reaches_the_crop_and_randaugment(tree, name, crop, rotate) -> None:
    """The release's `random`: bilinear or bicubic per image, in the crop and inside RandAugment alike."""
    from transmix.data.imagefolder import train_transform

    steps = train_transform(config(tree, train_interpolation=name))
    steps = getattr(steps, "transform", steps).transforms
    modes = steps[0].interpolation
    assert (tuple(m.value for m in modes) if isinstance(modes, tuple) else modes.value) == crop
    resample = steps[2].ops[3].kwargs["resample"]  # Rotate
    assert (tuple(int(r) for r in resample) if isinstance(resample, tuple) else int(resample)) == rotate


@pytest.mark.slow
def test_a_users_augmentation_reaches_timm_and_trains_with_flips_off(tree, tmp_path) -> None:
    """A user's own data: no flips, gentler crops, its own normalisation, all through timm's create_transform."""
    from transmix.data.imagefolder import eval_transform, train_transform

    cfg = config(tree, hflip=0.0, scale=[0.5, 1.0], ratio=[0.9, 1.1], aa="", color_jitter=0.0, mean=[0.5] * 3,
                 std=[0.25] * 3, train_interpolation="bilinear", reprob=0.0)  # fmt: skip
    steps = train_transform(cfg)
    names = [type(t).__name__ for t in getattr(steps, "transform", steps).transforms]
    assert "RandomHorizontalFlip" not in names and "ColorJitter" not in names, names
    crop = getattr(steps, "transform", steps).transforms[0]
    assert crop.scale == (0.5, 1.0) and crop.ratio == (0.9, 1.1)
    normalize = next(t for t in eval_transform(cfg).transforms if type(t).__name__ == "Normalize")
    assert list(normalize.mean) == [0.5] * 3 and list(normalize.std) == [0.25] * 3
    batch, _ = next(iter(train_split(cfg, (0, 1), torch.Generator()).batches(0, 0)))
    assert batch.dtype == torch.float32 and batch.min() < -1.9 and batch.max() > 1.9  # (0 or 1 - 0.5) / 0.25
    assert batch.min() >= -2 - 1e-6 and batch.max() <= 2 + 1e-6
    train(cfg, tmp_path / "run", progress=False)
    resolved = yaml.safe_load((tmp_path / "run" / RESOLVED).read_text())["config"]
    assert (resolved["hflip"], resolved["scale"], resolved["mean"]) == (0.0, [0.5, 1.0], [0.5, 0.5, 0.5])
