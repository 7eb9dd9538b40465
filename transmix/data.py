"""Datasets. Fashion-MNIST is small enough to live in memory as one tensor and be batched there.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package when installed (offline), from a folder of
the four ``*-ubyte.gz`` files a user names, or from torchvision's downloader when online. Reading is
torchvision's ``FashionMNIST``; this module only puts the files where it looks.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from transmix.atomic import atomic_open

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
