"""``loader: device`` against ``loader: pil`` on real JPEG folders, on the CPU (the same code decodes and augments on
a GPU): the same parameters per image, pixels within stated bounds, the same batches after a resume or with other
worker counts, training end to end, and the one-line errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from transmix.config.run import ConfigError, from_dict
from transmix.data import CorruptImage, train_split
from transmix.data.device import DeviceImageFolderSplit
from transmix.data.draws import apply_pil
from transmix.data.imagefolder import ImageFolderSplit, decode_image, train_transform
from transmix.data.synthetic import make_class_folders

TRAIN_IMAGES = 4 * 130  # the tolerances below are statistics over at least 500 images
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255,) * 3}  # "normalised" batches that hold the pixel values 0..255


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """520 training JPEGs of 96 x 80 pixels (stripes under noise: edges and texture, as photographs have)."""
    return make_class_folders(tmp_path_factory.mktemp("photos"), 4, (130, 2), (96, 80), suffix=".jpg")


def config(root: Path, **changes):
    values = dict(dataset="imagefolder", data_dir=str(root), img_size=64, aa="rand-m9-mstd0.5-inc1", batch_size=26,
                  num_workers=0, device="cpu", model="vit_micro_patch4_28", **RAW)  # fmt: skip
    return from_dict({**values, **changes})


def epoch_pixels(split: ImageFolderSplit, epoch: int = 0) -> torch.Tensor:
    """Every image of ``epoch`` in the split's order, as float pixel values (B, 3, H, W)."""
    batches = [x for x, _ in split.batches(epoch, 0)]
    split.close()
    return torch.cat(batches)


def test_each_image_gets_the_parameters_the_pil_path_applies(photos) -> None:
    # The device path's worker draws image i's parameters for key (i, epoch); applied with PIL they must give,
    # bit for bit, what timm's transform gives that key on the PIL path: the two paths share every random choice.
    cfg = config(photos)
    pil = ImageFolderSplit.training(cfg, (0, 1)).keyed_images()
    device = DeviceImageFolderSplit.training(cfg, (0, 1)).keyed_images()
    fired = set()
    for index, epoch in itertools.product(range(0, TRAIN_IMAGES, 13), (0, 3)):
        expected, label = pil[(index, epoch)]
        _, device_label, draw, path = device[(index, epoch)]
        assert device_label == label
        assert torch.equal(pil_to_tensor(apply_pil(decode_image(path), draw, cfg.img_size)), expected), (index, epoch)
        fired.update(op.name for op in draw.ops)
    assert len(fired) >= 12, fired  # most of RandAugment's 15 ops were among the keys compared


# Bounds in pixel levels (0..255) by device. On the CPU both paths decode with libjpeg-turbo and what differs is the
# resampling (torch's antialiased filters against PIL's): measured on these 520 images, crops differ by 0.23 levels on
# average (99% of pixels by at most 1), and RandAugmented epochs by 0.34 (per-channel means and deviations by at
# most 0.19). On a GPU nvJPEG's IDCT and chroma upsampling are not libjpeg's: a few levels more are allowed there.
BOUNDS = {"cpu": {"crop_mean": 0.5, "crop_q99": 2, "aug_mean": 1.0, "stat": 0.5},
          "cuda": {"crop_mean": 2.0, "crop_q99": 8, "aug_mean": 3.0, "stat": 1.5}}  # fmt: skip
DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                           reason="no CUDA device")])]  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_crops_without_randaugment_stay_within_a_pixel_bound(photos, device) -> None:
    cfg = config(photos, aa="", color_jitter=0.0)
    pil = epoch_pixels(ImageFolderSplit.training(cfg, (0, 1)))
    ours = epoch_pixels(DeviceImageFolderSplit.training(cfg.replace(device=device), (0, 1), torch.device(device)))
    diff = (pil - ours.cpu()).abs()
    assert len(pil) >= 500
    assert diff.mean() < BOUNDS[device]["crop_mean"], float(diff.mean())
    assert diff.flatten().quantile(0.99) <= BOUNDS[device]["crop_q99"], float(diff.flatten().quantile(0.99))


@pytest.mark.parametrize("device", DEVICES)
def test_randaugmented_epochs_agree_in_per_channel_statistics(photos, device) -> None:
    # A pixel near a solarize threshold may flip to its opposite, so single pixels can differ by up to 255; over an
    # epoch each channel's mean and standard deviation must agree.
    cfg = config(photos)
    pil = epoch_pixels(ImageFolderSplit.training(cfg, (0, 1)))
    ours = epoch_pixels(DeviceImageFolderSplit.training(cfg.replace(device=device), (0, 1), torch.device(device)))
    ours = ours.cpu()
    for stat in (lambda t: t.mean(dim=(0, 2, 3)), lambda t: t.std(dim=(0, 2, 3))):
        gap = (stat(pil) - stat(ours)).abs()
        assert (gap < BOUNDS[device]["stat"]).all(), gap.tolist()
    assert (pil - ours).abs().mean() < BOUNDS[device]["aug_mean"], float((pil - ours).abs().mean())


def test_a_resumed_epoch_and_other_worker_counts_give_the_same_batches(photos) -> None:
    # (random erasing is the PIL path's own step, DeviceFinish, tested there: its noise follows the trainer's RNG)
    cfg = config(photos)
    whole = [x for x, _ in itertools.islice(DeviceImageFolderSplit.training(cfg, (0, 1)).batches(2, 0), 6)]
    split = DeviceImageFolderSplit.training(cfg.replace(num_workers=2), (0, 1))
    resumed = list(itertools.islice(split.batches(2, 3), 3))
    split.close()
    for x, (y, _) in zip(whole[3:], resumed, strict=True):
        assert torch.equal(x, y)


def test_training_reads_through_the_device_path(photos, tmp_path) -> None:
    from transmix.training.checkpoint import HISTORY
    from transmix.training.train import train

    cfg = config(photos, img_size=32, epochs=2, warmup_epochs=0, method="transmix", **{
        "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "loader": "device"})  # fmt: skip
    assert type(train_split(cfg, (0, 1), torch.Generator())) is DeviceImageFolderSplit
    train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / HISTORY).read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(row["train_loss"]) for row in rows)


def test_a_corrupt_jpeg_is_named(tmp_path) -> None:
    root = make_class_folders(tmp_path / "data", 2, (4, 1), 40, suffix=".jpg")
    bad = root / "train" / "class1" / "0002.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    split = DeviceImageFolderSplit.training(config(root, img_size=32, batch_size=8), (0, 1))
    with pytest.raises(CorruptImage, match="0002.jpg"):
        list(split.batches(0, 0))
    split.close()


@pytest.mark.parametrize(("changes", "message"), [
    ({"aa": "augmix-m5-w4-d2"}, "loader=device runs timm's RandAugment"),
    ({"aa": "", "color_jitter": 0.4}, "loader=device has no colour jitter"),
])  # fmt: skip
def test_the_config_refuses_what_the_device_path_cannot_do(photos, changes, message) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        config(photos, loader="device", **changes)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("device", DEVICES)
def test_cmyk_grey_and_png_files_decode_as_the_pil_path_reads_them(tmp_path, device) -> None:
    # ImageNet's training set holds CMYK and greyscale JPEGs and a PNG named .JPEG. The device path decodes each as
    # PIL's convert("RGB") does (on the CPU exactly); the draw is the PIL path's, so with RandAugment off the
    # pixels agree within the resize's one level (on a GPU, within the bound nvJPEG's decoding is allowed).
    from transmix.data.device import EncodedImages, augmented, collate

    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "train" / "mixed"
    folder.mkdir(parents=True)
    base = Image.fromarray(rng.integers(0, 256, (60, 72, 3), dtype=np.uint8))
    base.convert("CMYK").save(folder / "cmyk.jpg", "JPEG")
    base.convert("L").save(folder / "grey.jpg", "JPEG")
    base.save(folder / "png_named.jpg", "PNG")
    base.save(folder / "plain.png")
    cfg = config(tmp_path / "data", aa="", color_jitter=0.0, img_size=32)
    samples = [(str(p), 0) for p in sorted(folder.iterdir())]
    split = DeviceImageFolderSplit(samples, train_transform(cfg), 1, 32)
    items = [EncodedImages(samples, split.transform, 0)[(i, 0)] for i in range(len(samples))]
    images, _ = augmented(collate(items), 32, torch.device(device))
    for image, (_, _, draw, path) in zip(images.cpu(), items, strict=True):
        diff = (image.int() - pil_to_tensor(apply_pil(decode_image(path), draw, 32)).int()).abs()
        if device == "cpu":
            assert diff.max() <= 1, path
        else:
            assert diff.float().mean() < BOUNDS[device]["crop_mean"], (path, float(diff.float().mean()))


def test_fashion_mnist_names_the_dataset_not_the_augmentation() -> None:
    with pytest.raises(ConfigError, match="loader='device' applies to dataset=imagefolder only"):
        from_dict({"loader": "device"})
