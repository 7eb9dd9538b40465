"""Class-folder datasets (ImageNet's layout): listed by timm's folder reader, decoded strictly, batched by a
``DataLoader``.

timm's ``find_images_and_targets`` lists the files (natural order, the class map of ``train/`` for both splits)
and ``create_transform`` makes the tensors. Decoding is strict: timm's ``ImageDataset`` logs and skips an image that
fails to open, which would silently train on another image; here a corrupt file stops training with its path
(:class:`CorruptImage`), and :func:`check_image_folder` finds every such file before training starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from transmix.config.run import IMAGENET_MEAN, IMAGENET_STD
from transmix.data.compat import naming_corrupt, pillow_safe, worker_init
from transmix.data.loader import DeviceFinish, EpochKeys, SeededImages, loader_workers, stream_seed
from transmix.data.split import SPLITS, Batch, CorruptImage, DatasetMissing

if TYPE_CHECKING:
    from transmix.config.run import TrainConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")  # what is read; any case
LAYOUT = ("DIR/train/<class>/<image> and DIR/val/<class>/<image> (class folders named alike in both; "
          f"{'/'.join(IMAGE_SUFFIXES)}; folders whose name starts with '.' are not classes)")  # fmt: skip
INTERPOLATION = "bicubic"  # the evaluation resize (timm's DeiT default); training's is the `train_interpolation` key
IMAGE_MEAN, IMAGE_STD = IMAGENET_MEAN, IMAGENET_STD  # the `mean` and `std` keys' defaults
RE_MODE = "pixel"  # DeiT's random-erasing fill (per-pixel normal noise); off unless `reprob` > 0
PREFETCH = 4  # batches each loader worker keeps ready

Samples = list[tuple[str, int]]  # (path, label)


def decode_image(path: str | Path) -> Image.Image:
    """Open and fully decode one image as RGB, or raise :class:`CorruptImage` naming the file.

    ``convert`` reads every pixel (PIL opens lazily), so a truncated file fails here, inside the try, and not
    later in a transform where nothing knows the file name.
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise CorruptImage(f"{path}: {type(err).__name__}: {err}") from None


def image_folder_classes(root: str | Path) -> dict[str, int]:
    """``{class folder: index}`` of ``root/train``, checking the layout of both splits first.

    Indices follow timm's order (natural sort of the names); ``val`` uses the same map, so a class missing from
    ``val`` does not shift the labels of the others.

    Raises:
        DatasetMissing: ``root``, ``train/`` or ``val/`` is missing, a split has images outside class folders, or
            ``val/`` has a class ``train/`` lacks. The message names the path and the expected layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetMissing(f"data_dir {root} does not exist; dataset=imagefolder expects {LAYOUT}")
    missing = [f"{split}/" for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise DatasetMissing(f"data_dir {root} has no {' and no '.join(missing)} folder; dataset=imagefolder "
                             f"expects {LAYOUT}")  # fmt: skip
    classes: dict[str, list[str]] = {}
    for split in SPLITS:
        folder = root / split
        loose = [e.name for e in folder.iterdir() if e.is_file() and e.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise DatasetMissing(f"{folder} holds images outside class folders ({', '.join(sorted(loose)[:3])}...); "
                                 f"move each into its class folder: {LAYOUT}")  # fmt: skip
        classes[split] = class_folders(folder)
        if not classes[split]:
            raise DatasetMissing(f"{folder} has no class folders; dataset=imagefolder expects {LAYOUT}")
    unknown = sorted(set(classes["val"]) - set(classes["train"]))
    if unknown:
        raise DatasetMissing(f"{root / 'val'} has class folders that {root / 'train'} lacks: {unknown[:5]}; "
                             f"both splits must use the same class names ({LAYOUT})")  # fmt: skip
    return {name: index for index, name in enumerate(classes["train"])}


def class_folders(folder: Path) -> list[str]:
    """The class folders of ``folder`` in timm's order (natural sort); hidden ones (``.ipynb_checkpoints``) are
    not classes."""
    from timm.utils.misc import natural_key

    return sorted((e.name for e in folder.iterdir() if e.is_dir() and not e.name.startswith(".")), key=natural_key)


def list_images(folder: str | Path, classes: dict[str, int] | None = None,
                every_class: bool = False) -> tuple[Samples, dict[str, int]]:  # fmt: skip
    """``(path, label)`` of every image in the class folders of ``folder`` (timm's folder reader, natural order),
    and the class map used: ``classes`` (folder name -> label) when given, else the folders' own natural order.
    The one way this package lists images. Files of other types are named in a warning, not read.

    Raises:
        DatasetMissing: ``folder`` does not exist or holds no images in class folders; with ``every_class``, a
            class holds no image (a training split: its output would never be trained).
    """
    from timm.data.readers.reader_image_folder import find_images_and_targets

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetMissing(f"{folder} does not exist; expected a folder of class folders holding images")
    classes = classes or {name: index for index, name in enumerate(class_folders(folder))}
    samples, found = find_images_and_targets(str(folder), types=IMAGE_SUFFIXES, class_to_idx=classes)
    if not samples:
        raise DatasetMissing(f"{folder} holds no images in class folders; expected {LAYOUT}")
    others = [p for name in classes for p in (folder / name).rglob("*")
              if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES and not p.name.startswith(".")]  # fmt: skip
    if others:
        kinds = sorted({p.suffix.lower() or "(none)" for p in others})
        log.warning("%d file(s) in %s are not read: not %s (%s; e.g. %s)", len(others), folder,
                    "/".join(IMAGE_SUFFIXES), ", ".join(kinds[:5]), others[0])  # fmt: skip
    if every_class:
        labelled = {label for _, label in samples}
        empty = [name for name, label in found.items() if label not in labelled]
        if empty:
            raise DatasetMissing(f"class folder(s) {empty[:5]} of {folder} hold no images; a class without "
                                 "training images is never learned: add images or remove the folder")  # fmt: skip
    return samples, found


def random_subset(samples: Samples, n: int, gen: torch.Generator) -> Samples:
    """A random ``n`` of ``samples`` drawn from ``gen``, in their order (all of them when ``n`` is 0 or too large).

    Class folders are listed class by class, so their first ``n`` images would be their first classes."""
    if n <= 0 or n >= len(samples):
        return samples
    return [samples[i] for i in sorted(torch.randperm(len(samples), generator=gen)[:n].tolist())]


def _decode_error(path: str) -> str | None:
    try:
        decode_image(path)
    except CorruptImage as err:
        return str(err)
    return None


def check_image_folder(root: str | Path, workers: int | None = None) -> dict[str, int]:
    """Decode every image of both splits (in ``workers`` threads; PIL decodes outside the GIL).

    Returns:
        Images per split and the number of classes, e.g. ``{"train": 1281167, "val": 50000, "classes": 1000}``.

    Raises:
        DatasetMissing: the layout is wrong (see :func:`image_folder_classes`).
        CorruptImage: one line per file that does not decode, with its path and error; all are listed, so one
            pass finds every file to replace.
    """
    classes = image_folder_classes(root)
    paths = {split: [path for path, _ in list_images(Path(root) / split, classes, every_class=split == "train")[0]]
             for split in SPLITS}  # fmt: skip
    every = [path for split in SPLITS for path in paths[split]]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        errors = [e for e in pool.map(_decode_error, every, chunksize=64) if e is not None]
    if errors:
        raise CorruptImage(f"{len(errors)} of {len(every)} images in {root} do not decode; replace or remove them:\n"
                           + "\n".join(f"  {e}" for e in errors))  # fmt: skip
    return {"train": len(paths["train"]), "val": len(paths["val"]), "classes": len(classes)}


class ImageFiles(torch.utils.data.Dataset):
    """Image files with their labels, decoded strictly (:func:`decode_image`) and transformed: ``(tensor, label)``.

    A :class:`Split` when given the run's ``num_classes`` and ``img_size`` (what a model built on it expects).
    """

    def __init__(self, samples: Samples, transform: Callable[[Image.Image], torch.Tensor], num_workers: int = 0,
                 num_classes: int = 0, img_size: int = 0):  # fmt: skip
        self.samples, self.transform, self.num_workers = samples, transform, loader_workers(num_workers)
        self.num_classes, self.image_shape = num_classes, (3, img_size, img_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        return self.transform(decode_image(path)), target

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """Every image in order, in batches, loaded by ``num_workers`` processes; a corrupt file is named."""
        return naming_corrupt(DataLoader(self, batch_size=batch_size, **_loader_options(self.num_workers)))


class ImageFolderSplit(ImageFiles):
    """One split of a class-folder tree; as a :class:`TrainSplit`, one ``DataLoader`` iterator for the whole run,
    its uint8 batches finished on the device (:mod:`transmix.data.loader`).

    timm's ``create_loader`` is not used: its sampler is not seeded by the run's seed, it cannot start mid-epoch,
    and its augmentation streams follow the workers, not the images.

    Under ``torchrun`` each process reads its own shard (``DistributedSampler``) and mixes its own local batch, as
    timm's and the official training scripts do; the in-memory path instead mixes the global batch. The mixing
    draws (mode, lam, box) come from the run's generator, identical on every process, so all processes mix with
    the same lam and box, but pairs never cross processes.

    Reproducibility: the order of epoch ``e`` depends only on ``(seed, e)`` (the sampler's seed and
    ``set_epoch``), and each image's augmentation only on ``(seed, e, image)``, so a resume at an epoch boundary or
    mid-epoch sees the same batches, the latter skipping the batches already trained without loading them, with any
    ``num_workers``; nothing needs saving (:meth:`state_dict` is empty).
    """

    global_batches = False  # each process loads, mixes and trains on its own batch

    def __init__(self, samples: Samples, transform: Callable[[Image.Image], torch.Tensor], num_classes: int,
                 img_size: int, batch_size: int = 0, part: tuple[int, int] = (0, 1), seed: int = 0,
                 num_workers: int = 0, finish: DeviceFinish | None = None):  # fmt: skip
        super().__init__(samples, transform, num_workers, num_classes, img_size)
        self.batch_size, self.part, self.seed = batch_size, part, seed
        self.finish = finish or DeviceFinish(IMAGE_MEAN, IMAGE_STD, torch.device("cpu"))
        self._stream: Iterator[Batch] | None = None  # the loader's batches from `_position` = (epoch, batch) on
        self._position = (-1, -1)

    @classmethod
    def training(cls, cfg: TrainConfig, part: tuple[int, int], device: torch.device | None = None) -> ImageFolderSplit:
        """``train/`` with the training transform, in batches of ``cfg.batch_size`` per process, delivered on
        ``device`` (default: the CPU)."""
        classes = image_folder_classes(cfg.data_dir)
        samples, _ = list_images(Path(cfg.data_dir) / SPLITS[0], classes, every_class=True)
        finish = DeviceFinish(cfg.mean, cfg.std, device or torch.device("cpu"), cfg.reprob, RE_MODE)
        return cls(samples, train_transform(cfg), len(classes), cfg.img_size, cfg.batch_size, part, cfg.seed,
                   cfg.num_workers, finish)  # fmt: skip

    @classmethod
    def evaluation(cls, cfg: TrainConfig, images: int = 0) -> ImageFolderSplit:
        """``val/`` with the evaluation transform: all of it, or a random ``images`` of it drawn with seed 0, the
        same images for every run (so that runs are compared on one set)."""
        classes = image_folder_classes(cfg.data_dir)
        samples, _ = list_images(Path(cfg.data_dir) / SPLITS[1], classes)
        samples = random_subset(samples, images, torch.Generator().manual_seed(0))
        return cls(samples, eval_transform(cfg), len(classes), cfg.img_size, num_workers=cfg.num_workers)

    def epoch_indices(self, epoch: int, start: int = 0) -> list[int]:
        """This process's sample indices of ``epoch``, from batch ``start`` on (whole batches only)."""
        return shard_indices(len(self), self.part, self.seed, self.batch_size, epoch, start)

    def batches(self, epoch: int, start: int) -> Iterator[Batch]:
        """This process's local batches of ``epoch`` from batch ``start`` on, normalised on the device. The loader
        started by an earlier epoch goes on when this one continues where it stopped."""
        if self._stream is None or self._position != (epoch, start):
            self.close()
            keys = EpochKeys(partial(shard_indices, len(self), self.part, self.seed, self.batch_size), epoch, start)
            options = _loader_options(self.num_workers, self.finish.device)
            loader = DataLoader(self.keyed_images(), batch_size=self.batch_size, sampler=keys, collate_fn=self.collate,
                                **options)  # fmt: skip
            self._stream = self.prepared(naming_corrupt(loader))
        total = len(self) // self.part[1] // self.batch_size
        for number in range(start, total):
            images, labels = next(self._stream)
            self._position = (epoch, number + 1) if number + 1 < total else (epoch + 1, 0)
            yield self.finish(images, labels, stream_seed(self.seed, epoch, self.part[0], number))

    collate = None  # the DataLoader's default: uint8 images stacked, labels as a tensor

    def keyed_images(self) -> Dataset:
        """What the loader's workers read for key ``(index, epoch)``: here the image decoded and augmented by timm's
        transform under that key's seed."""
        return SeededImages(ImageFiles(self.samples, self.transform), self.seed)  # holds no loader: no cycle

    def prepared(self, batches: Iterator[Any]) -> Iterator[Batch]:
        """The loader's batches as uint8 ``(B, C, H, W)`` images and labels (here they already are)."""
        return batches

    def close(self) -> None:
        """Stop the loader's workers now (they would otherwise wait for the garbage collector)."""
        self._stream, self._position = None, (-1, -1)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state  # the order and the augmentation are functions of (seed, epoch, image): nothing to restore


def shard_indices(n: int, part: tuple[int, int], seed: int, batch_size: int, epoch: int, start: int) -> list[int]:
    """Process ``part = (rank, world)``'s indices of ``n`` images in ``epoch`` (``DistributedSampler``'s shuffle,
    seeded by ``(seed, epoch)``), from batch ``start`` on, whole batches only."""
    rank, world = part
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    indices = list(sampler)
    return indices[start * batch_size : len(indices) // batch_size * batch_size]


def _loader_options(workers: int, device: torch.device | None = None) -> dict[str, Any]:
    """``DataLoader`` arguments shared by training and evaluation: workers that survive a SLURM SIGTERM long
    enough for the checkpoint (:func:`worker_init`) and keep :data:`PREFETCH` batches ready, pinned memory for a
    CUDA device, and a generator of its own for the seed a ``DataLoader`` draws whenever it starts, which would
    otherwise come from the trainer's global RNG (and shift its stochastic depth by when a process started)."""
    cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": cuda, "generator": torch.Generator()}
    if workers:
        options.update(prefetch_factor=PREFETCH, worker_init_fn=worker_init)
    return options


def train_transform(cfg: TrainConfig) -> Callable[[Image.Image], torch.Tensor]:
    """RandomResizedCrop + flip + auto-augment (colour jitter only without it, timm's rule), to a uint8 tensor:
    normalisation and random erasing happen on the device (:class:`DeviceFinish`)."""
    from timm.data import create_transform

    return pillow_safe(create_transform(cfg.img_size, is_training=True, scale=cfg.scale, ratio=cfg.ratio,
                                        hflip=cfg.hflip, vflip=cfg.vflip, color_jitter=cfg.color_jitter or None,
                                        auto_augment=cfg.aa or None, interpolation=cfg.train_interpolation,
                                        use_prefetcher=True))  # fmt: skip


def eval_transform(cfg: TrainConfig) -> Callable[[Image.Image], torch.Tensor]:
    """How an imagefolder run reads an image for evaluation: resize to ``img_size / crop_pct``, centre crop,
    normalisation by the run's ``mean`` and ``std`` (ImageNet's by default)."""
    from timm.data import create_transform

    return create_transform(cfg.img_size, is_training=False, crop_pct=cfg.crop_pct, mean=cfg.mean, std=cfg.std,
                            interpolation=INTERPOLATION)  # fmt: skip
