"""Datasets, behind the two small interfaces the training loop and the evaluations use.

Fashion-MNIST lives in memory as one tensor and is batched there (:mod:`transmix.data.fashion_mnist`; its files are
put in place by :mod:`transmix.data.prepare`). ImageNet-style data is a class-folder tree read image by image
through timm's transforms and a ``DataLoader`` (:mod:`transmix.data.imagefolder`), or with ``loader: device``
decoded and augmented on the run's device (:mod:`transmix.data.device`); CIFAR-10/100 are written as
such a tree once (:mod:`transmix.data.cifar`) and read the same way. Work-arounds for library
behaviour that would otherwise lose a run are kept apart in :mod:`transmix.data.compat`.

Both answer :class:`~transmix.data.split.Split` (what evaluation reads) and :class:`~transmix.data.split.TrainSplit`
(what the loop trains on). Each split is
made with what it needs (the in-memory one the run's generator, which draws its order and augmentation; the
class-folder one its shard and seed), so the per-epoch call takes only the epoch and the batch to start from.

This module imports no torch: ``transmix data`` and the Snakefile use :mod:`transmix.data.prepare` without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transmix.data.split import Batch, CorruptImage, DatasetMissing, Split, TrainSplit

if TYPE_CHECKING:
    import torch

    from transmix.config.run import TrainConfig

__all__ = ["Batch", "CorruptImage", "DatasetMissing", "Split", "TrainSplit", "class_names", "eval_split", "train_split"]


def train_split(cfg: TrainConfig, part: tuple[int, int], gen: torch.Generator,
                device: torch.device | None = None) -> TrainSplit:  # fmt: skip
    """The configured training split for process ``part = (rank, world)``; ``gen`` is the run's generator.
    Class-folder batches arrive on ``device`` (default: the CPU), normalised there; in-memory ones on the CPU."""
    if cfg.dataset == "fashion_mnist":
        from transmix.data.fashion_mnist import ShuffledBatches, load_fashion_mnist

        data = load_fashion_mnist(cfg.data_dir, train=True).head(cfg.train_subset)
        return ShuffledBatches(data, cfg.batch_size * part[1], gen)
    _check_prepared(cfg)
    if cfg.loader == "device":
        from transmix.data.device import DeviceImageFolderSplit

        return DeviceImageFolderSplit.training(cfg, part, device)
    from transmix.data.imagefolder import ImageFolderSplit

    return ImageFolderSplit.training(cfg, part, device)


def eval_split(cfg: TrainConfig, images: int | None = None) -> Split:
    """The configured evaluation split: Fashion-MNIST's test split (its first ``images``; it comes in random class
    order) or ``val/`` (a seeded random ``images`` of it, the same for every run). ``images``: 0 = all; default:
    the config's ``val_subset``, the per-epoch validation set."""
    images = cfg.val_subset if images is None else images
    if cfg.dataset == "fashion_mnist":
        from transmix.data.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(cfg.data_dir, train=False).head(images)
    from transmix.data.imagefolder import ImageFolderSplit

    _check_prepared(cfg)
    return ImageFolderSplit.evaluation(cfg, images)


def class_names(cfg: TrainConfig) -> list[str]:
    """The name of each label, by index: Fashion-MNIST's classes, or the training class folders in timm's order."""
    if cfg.dataset == "fashion_mnist":
        from transmix.data.fashion_mnist import CLASSES

        return list(CLASSES)
    from transmix.data.imagefolder import image_folder_classes

    _check_prepared(cfg)
    return list(image_folder_classes(cfg.data_dir))


def _check_prepared(cfg: TrainConfig) -> None:
    """CIFAR trains from the class folders ``transmix data --dataset`` writes: say so when they are not there."""
    if cfg.dataset in ("cifar10", "cifar100"):
        from transmix.data.cifar import is_prepared

        if not is_prepared(cfg.data_dir):
            raise DatasetMissing(f"data_dir {cfg.data_dir} holds no prepared {cfg.dataset}: run `transmix data "
                                 f"--dataset {cfg.dataset} --root {cfg.data_dir}` first (it reads torchvision's "
                                 "files there, or downloads them)")  # fmt: skip
