"""Datasets, behind one small interface the training loop uses for both.

Fashion-MNIST is small enough to live in memory as one tensor and be batched there (:class:`TensorDataset`). It
comes from Debian's ``dataset-fashion-mnist`` package when installed (offline), from a folder of the four
``*-ubyte.gz`` files a user names, or from torchvision's downloader when online. Reading is torchvision's
``FashionMNIST``; this module only puts the files where it looks.

ImageNet-style data is a class-folder tree read image by image (:class:`ImageFolderSplit`): timm's
``create_dataset`` lists the files, timm's ``create_transform`` makes the tensors, and a ``DataLoader`` per epoch
feeds the loop. Decoding is strict: timm's ``ImageDataset`` logs and skips an image that fails to open, which
would silently train on another image; here a corrupt file stops training with its path
(:class:`CorruptImage`), and :func:`check_image_folder` finds every such file before training starts.

Both classes answer what the loop asks: ``num_classes``, ``image_shape``, ``len()``, ``global_batches``,
``epoch_order(gen)``, ``batches(batch_size, part, epoch, order, start, gen)`` and ``eval_batches(batch_size)``.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from transmix.atomic import atomic_open

if TYPE_CHECKING:
    from transmix.config import TrainConfig

log = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class DatasetMissing(FileNotFoundError):
    """The dataset is not where the config says; the message says how to get it."""


def raw_dir(root: str | Path) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def is_prepared(root: str | Path) -> bool:
    return all((raw_dir(root) / name).is_file() for name in FILES)


def prepare_fashion_mnist(root: str | Path, source: str | Path | None = None, download: bool = True) -> Path:
    """Make ``root`` hold Fashion-MNIST in torchvision's layout; returns the raw folder.

    Order: already there; ``source`` (a folder with the ``.gz`` files); Debian's package; torchvision's
    downloader. Files are unpacked to a temporary name and renamed, so an interrupted run leaves no half file.
    """
    raw = raw_dir(root)
    if is_prepared(root):
        return raw
    candidates = [Path(source)] if source is not None else [DEBIAN_DIR]
    for folder in candidates:
        if all((folder / f"{name}.gz").is_file() for name in FILES):
            raw.mkdir(parents=True, exist_ok=True)
            for name in FILES:
                _gunzip_atomic(folder / f"{name}.gz", raw / name)
            log.info("Fashion-MNIST unpacked from %s into %s", folder, raw)
            return raw
        if source is not None:
            raise DatasetMissing(f"{folder} does not hold the four Fashion-MNIST files {[f + '.gz' for f in FILES]}")
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
            return raw
        except Exception as err:  # noqa: BLE001 - any network failure ends in the same advice
            reason = f" (download failed: {err})"
    else:
        reason = ""
    raise DatasetMissing(
        f"Fashion-MNIST is not in {raw}{reason}. Get it either way:\n"
        "  1. offline, Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (then rerun)\n"
        "  2. online: transmix data --root " + str(root) + "  (torchvision downloads it)\n"
        "or point at a folder holding the four *-ubyte.gz files: transmix data --source DIR"
    )


def _gunzip_atomic(src: Path, dst: Path) -> None:
    with atomic_open(dst, "wb") as out, gzip.open(src, "rb") as inp:
        shutil.copyfileobj(inp, out)


@dataclass(frozen=True)
class TensorDataset:
    """Normalised images ``(N, C, H, W)`` float32 and labels ``(N,)`` int64, in memory."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> TensorDataset:
        """The first ``n`` samples (all when ``n`` is 0)."""
        if n <= 0 or n >= len(self):
            return self
        return TensorDataset(self.images[:n], self.labels[:n], self.num_classes)

    # The loop's interface (see the module docstring).
    global_batches = True  # every process draws the same global batch, mixes it, and trains on its slice

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def epoch_order(self, gen: torch.Generator) -> torch.Tensor:
        """The epoch's permutation, drawn from the run's generator and kept in mid-epoch checkpoints."""
        return torch.randperm(len(self), generator=gen)

    def batches(
        self,
        batch_size: int,
        part: tuple[int, int],
        epoch: int,
        order: torch.Tensor | None,
        start: int,
        gen: torch.Generator,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Global batches (``batch_size`` times the processes of ``part``) of :func:`train_batches`."""
        del epoch  # the order carries the epoch
        return train_batches(self, batch_size * part[1], gen, order=order, start=start)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return eval_batches(self, batch_size)


def load_fashion_mnist(root: str | Path, train: bool) -> TensorDataset:
    """One split of Fashion-MNIST, normalised. Raises :class:`DatasetMissing` with instructions."""
    if not is_prepared(root):
        raise DatasetMissing(
            f"Fashion-MNIST is not prepared in {raw_dir(root)}: run `transmix data --root {root}` "
            "(uses Debian's dataset-fashion-mnist package, a --source folder, or downloads)"
        )
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(str(root), train=train, download=False)
    images = (ds.data.unsqueeze(1).float() / 255.0 - MEAN) / STD
    return TensorDataset(images.contiguous(), ds.targets.long(), len(CLASSES))


def train_batches(
    data: TensorDataset,
    batch_size: int,
    gen: torch.Generator,
    order: torch.Tensor | None = None,
    start: int = 0,
    augment: bool = True,
    pad: int = 2,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of full batches in ``order`` (drawn from ``gen`` when not given), from batch ``start`` on.

    The last partial batch is dropped, so mixing always pairs. Augmentation: random crop after ``pad`` pixels of
    padding with the background value, and a horizontal flip with probability 0.5, vectorised over the batch;
    all randomness comes from ``gen``, drawn batch by batch, so a run stopped after batch ``k`` continues exactly
    when given the same ``order``, ``start=k`` and the generator state it had then.
    """
    n = len(data)
    if n < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} training images; lower batch_size")
    if order is None:
        order = torch.randperm(n, generator=gen)
    background = (0.0 - MEAN) / STD
    for first in range(start * batch_size, n - batch_size + 1, batch_size):
        idx = order[first : first + batch_size]
        x, y = data.images[idx], data.labels[idx]
        if augment:
            b, _, h, w = x.shape
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=background)
            oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
            ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
            rows = (oy[:, None] + torch.arange(h))[:, :, None]
            cols = (ox[:, None] + torch.arange(w))[:, None, :]
            x = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)
            flip = torch.rand(b, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x).contiguous()
        yield x, y


def eval_batches(data: TensorDataset, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(data), batch_size):
        yield data.images[start : start + batch_size], data.labels[start : start + batch_size]


# --- ImageFolder ---------------------------------------------------------------------------------------------------

LAYOUT = "DIR/train/<class>/<image> and DIR/val/<class>/<image> (class folders named alike in both; .jpg/.jpeg/.png)"
SPLITS = ("train", "val")
INTERPOLATION = "bicubic"  # DeiT's (and the TransMix release's) resize filter, for training and evaluation
IMAGE_MEAN = (0.485, 0.456, 0.406)  # timm's IMAGENET_DEFAULT_MEAN / _STD: every imagefolder run's normalisation
IMAGE_STD = (0.229, 0.224, 0.225)
RE_MODE = "pixel"  # DeiT's random-erasing fill (per-pixel normal noise); off unless `reprob` > 0


class CorruptImage(ValueError):
    """An image does not decode; the message names every such file and its error."""


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
    from timm.data.readers.img_extensions import get_img_extensions
    from timm.utils.misc import natural_key

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
        entries = list(folder.iterdir())
        loose = [e.name for e in entries if e.is_file() and e.suffix.lower() in get_img_extensions(as_set=True)]
        if loose:
            raise DatasetMissing(f"{folder} holds images outside class folders ({', '.join(sorted(loose)[:3])}...); "
                                 f"move each into its class folder: {LAYOUT}")  # fmt: skip
        classes[split] = sorted((e.name for e in entries if e.is_dir()), key=natural_key)
        if not classes[split]:
            raise DatasetMissing(f"{folder} has no class folders; dataset=imagefolder expects {LAYOUT}")
    unknown = sorted(set(classes["val"]) - set(classes["train"]))
    if unknown:
        raise DatasetMissing(f"{root / 'val'} has class folders that {root / 'train'} lacks: {unknown[:5]}; "
                             f"both splits must use the same class names ({LAYOUT})")  # fmt: skip
    return {name: index for index, name in enumerate(classes["train"])}


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
    paths = {split: [path for path, _ in list_images(Path(root) / split, classes)[0]] for split in SPLITS}
    every = [path for split in SPLITS for path in paths[split]]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        errors = [e for e in pool.map(_decode_error, every, chunksize=64) if e is not None]
    if errors:
        raise CorruptImage(f"{len(errors)} of {len(every)} images in {root} do not decode; replace or remove them:\n"
                           + "\n".join(f"  {e}" for e in errors))  # fmt: skip
    return {"train": len(paths["train"]), "val": len(paths["val"]), "classes": len(classes)}


class ImageFiles(torch.utils.data.Dataset):
    """Image files with their labels, decoded strictly (:func:`decode_image`) and transformed: ``(tensor, label)``."""

    def __init__(
        self,
        samples: list[tuple[str, int]],
        transform: Callable[[Image.Image], torch.Tensor],
        num_workers: int = 0,
    ):
        self.samples = samples
        self.transform = transform
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        return self.transform(decode_image(path)), target

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image in order, in batches, loaded by ``num_workers`` processes; a corrupt file is named."""
        loader = DataLoader(self, batch_size=batch_size, num_workers=self.num_workers,
                            pin_memory=torch.cuda.is_available())  # fmt: skip
        return _naming_corrupt(loader)


def list_images(
    folder: str | Path, classes: dict[str, int] | None = None
) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """``(path, label)`` of every image in the class folders of ``folder`` (timm's folder reader, natural order),
    and the class map used: ``classes`` (folder name -> label) when given, else the folders' own natural order.

    Raises:
        DatasetMissing: ``folder`` does not exist or holds no images in class folders.
    """
    from timm.data.readers.reader_image_folder import find_images_and_targets

    if not Path(folder).is_dir():
        raise DatasetMissing(f"{folder} does not exist; expected a folder of class folders holding images")
    samples, found = find_images_and_targets(str(folder), class_to_idx=classes)
    if not samples:
        raise DatasetMissing(f"{folder} holds no images (.jpg/.jpeg/.png) in class folders")
    return samples, found


class ImageFolderSplit(ImageFiles):
    """One split of a class-folder tree, batched by a ``DataLoader`` per epoch.

    timm's ``create_dataset`` lists the files (its folder reader, with the class map of ``train/``) and
    ``create_transform`` builds the transform; ``__getitem__`` decodes with :func:`decode_image` instead of timm's
    skip-on-error. timm's ``create_loader`` is not used: its sampler is not seeded by the run's seed, it cannot
    start mid-epoch, and its prefetcher and collate would duplicate what the loop does.

    Under ``torchrun`` each process reads its own shard (``DistributedSampler``) and mixes its own local batch, as
    timm's and the official training scripts do; the in-memory path instead mixes the global batch. The mixing
    draws (mode, lam, box) come from the run's generator, identical on every process, so all processes mix with
    the same lam and box, but pairs never cross processes.

    Reproducibility: the order of epoch ``e`` depends only on ``(seed, e)`` (the sampler's seed and
    ``set_epoch``), so a resume at an epoch boundary or mid-epoch sees the same order, the latter skipping the
    batches already trained without loading them. Augmentation runs in the workers, each seeded from
    ``(seed, epoch, rank)``: an epoch-boundary resume repeats it exactly when ``num_workers`` > 0. It is not
    repeated after a mid-epoch resume (the workers restart their streams at the resumed batch, and batches
    reach workers round-robin), nor with ``num_workers=0``, where the transforms draw from the trainer
    process's global Python, NumPy and torch RNGs.
    """

    global_batches = False  # each process loads, mixes and trains on its own batch

    def __init__(
        self,
        root: str | Path,
        split: str,
        classes: dict[str, int],
        transform: Callable[[Image.Image], torch.Tensor],
        img_size: int,
        seed: int = 0,
        num_workers: int = 0,
    ):
        from timm.data import create_dataset

        folder = Path(root) / split
        try:
            self.source = create_dataset("", root=str(folder), split=split, search_split=False, class_map=classes)
        except RuntimeError as err:  # timm's folder reader: "Found 0 images in subfolders of ..."
            raise DatasetMissing(f"{folder} holds no images in its class folders ({err}); dataset=imagefolder "
                                 f"expects {LAYOUT}") from None  # fmt: skip
        super().__init__(self.source.reader.samples, transform, num_workers)
        self.num_classes = len(classes)
        self.image_shape = (3, img_size, img_size)
        self.seed = seed

    def epoch_order(self, gen: torch.Generator) -> None:
        """None: the order is the sampler's, a function of seed and epoch; the run's generator is not used."""
        del gen

    def epoch_indices(self, batch_size: int, part: tuple[int, int], epoch: int, start: int = 0) -> list[int]:
        """This process's sample indices of ``epoch``, from batch ``start`` on (whole batches only)."""
        rank, world = part
        sampler = DistributedSampler(self, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=True)
        sampler.set_epoch(epoch)
        indices = list(sampler)
        return indices[start * batch_size : len(indices) // batch_size * batch_size]

    def batches(
        self,
        batch_size: int,
        part: tuple[int, int],
        epoch: int,
        order: torch.Tensor | None,
        start: int,
        gen: torch.Generator,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's local batches of ``epoch`` from batch ``start`` on; ``order`` and ``gen`` are unused."""
        del order, gen
        workers = np.random.SeedSequence([self.seed, epoch, part[0]]).generate_state(1)[0]
        loader = DataLoader(
            self,
            batch_size=batch_size,
            sampler=self.epoch_indices(batch_size, part, epoch, start),
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(int(workers)),  # the workers' seeds; not the global RNG
            worker_init_fn=_worker_init,
        )
        return _naming_corrupt(loader)


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs: object) -> Image.Image:
    """timm's ``posterize``, with 0 bits kept giving the black image Pillow used to return for it.

    RandAugment's ``PosterizeIncreasing`` keeps ``4 - int(4 * m / 10)`` bits, so 0 once the magnitude, drawn
    around 9 with std 0.5 by ``rand-m9-mstd0.5``, reaches its cap of 10 (about 2% of draws). Pillow 13 (installed
    here) raises ``ValueError`` for 0 bits where earlier versions masked every bit; unpatched, a run with the
    paper's policy dies within the first batches on ImageNet.
    """
    from timm.data.auto_augment import posterize

    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep, **kwargs)


def _pillow_safe(transform: Callable[[Image.Image], torch.Tensor]) -> Callable[[Image.Image], torch.Tensor]:
    """Point the posterize ops of timm's auto-augment inside ``transform`` at :func:`_posterize` (this transform
    only; timm itself is not patched)."""
    for step in getattr(transform, "transforms", ()):
        ops = list(getattr(step, "ops", ())) + [op for sub in getattr(step, "policy", ()) for op in sub]
        for op in ops:
            if "Posterize" in getattr(op, "name", ""):
                op.aug_fn = _posterize
    return transform


SIGTERM_GRACE_S = 30  # SLURM's default KillWait: the time between its SIGTERM and its SIGKILL


def _worker_init(worker_id: int) -> None:
    """Loader workers outlive a SIGTERM by :data:`SIGTERM_GRACE_S` seconds, then exit cleanly.

    SLURM preempts by signalling every process of the job, workers included. A worker killed by the signal
    makes torch raise in the trainer at once, before the step ends and its checkpoint is written; one that waits
    keeps serving batches while the trainer saves, and its exit status 0 raises nothing. It does not ignore the
    signal for good: multiprocessing terminates leftover workers with SIGTERM at exit and waits for them.
    """
    del worker_id
    signal.signal(signal.SIGALRM, lambda *_: os._exit(0))
    signal.signal(signal.SIGTERM, lambda *_: signal.alarm(SIGTERM_GRACE_S))


def _naming_corrupt(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches; a :class:`CorruptImage` raised in a worker comes back with its one-line message
    (torch re-raises it wrapped in the worker's traceback)."""
    try:
        yield from loader
    except CorruptImage as err:
        message = str(err).strip().splitlines()[-1]
        # torch's error holds a cycle (error -> traceback -> the frame that raised it -> error) through the
        # loader's iterator; cut here and raised outside this block, the iterator goes at once and shuts its
        # workers down, instead of lingering until the garbage collector or the interpreter's exit.
        err.__traceback__ = None
    else:
        return
    raise CorruptImage(message.removeprefix(f"{CorruptImage.__module__}.{CorruptImage.__name__}: "))


def load_split(cfg: TrainConfig, train: bool) -> TensorDataset | ImageFolderSplit:
    """One split of the configured dataset: the training split, or the one evaluated (test / ``val/``)."""
    if cfg.dataset == "fashion_mnist":
        return load_fashion_mnist(cfg.data_dir, train=train).head(cfg.train_subset if train else cfg.val_subset)
    from timm.data import create_transform

    if train:  # RandomResizedCrop + flip + auto-augment (colour jitter only without it, timm's rule) + erasing
        norm = dict(mean=IMAGE_MEAN, std=IMAGE_STD, interpolation=INTERPOLATION)
        transform = _pillow_safe(create_transform(cfg.img_size, is_training=True, auto_augment=cfg.aa or None,
                                                  re_prob=cfg.reprob, re_mode=RE_MODE, **norm))  # fmt: skip
    else:
        transform = eval_transform(cfg)
    classes = image_folder_classes(cfg.data_dir)
    return ImageFolderSplit(cfg.data_dir, SPLITS[0] if train else SPLITS[1], classes, transform, cfg.img_size,
                            seed=cfg.seed, num_workers=cfg.num_workers)  # fmt: skip


def eval_transform(cfg: TrainConfig) -> Callable[[Image.Image], torch.Tensor]:
    """How an imagefolder run reads an image for evaluation: resize to ``img_size / crop_pct``, centre crop,
    ImageNet normalisation (:data:`IMAGE_MEAN`, :data:`IMAGE_STD`)."""
    from timm.data import create_transform

    return create_transform(cfg.img_size, is_training=False, crop_pct=cfg.crop_pct, mean=IMAGE_MEAN, std=IMAGE_STD,
                            interpolation=INTERPOLATION)  # fmt: skip
