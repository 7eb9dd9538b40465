"""Fashion-MNIST in memory: normalised tensors, batched, augmented and shuffled from the run's generator.

The whole split is one ``(N, 1, 28, 28)`` tensor, so a batch is an index into it and augmentation (a random crop
after padding, a horizontal flip) is vectorised over the batch. Every random draw comes from the run's
``torch.Generator``, batch by batch, so a run stopped after batch ``k`` continues exactly when it is given the
epoch's order, ``start=k`` and the generator state it had then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transmix.data.prepare import is_prepared, raw_dir
from transmix.data.split import Batch, DatasetMissing

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class TensorDataset:
    """Normalised images ``(N, C, H, W)`` float32 and labels ``(N,)`` int64, in memory; a :class:`Split`."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def head(self, n: int) -> TensorDataset:
        """The first ``n`` samples (all when ``n`` is 0)."""
        if n <= 0 or n >= len(self):
            return self
        return dataclasses.replace(self, images=self.images[:n], labels=self.labels[:n])

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """Every sample in order, in batches of ``batch_size`` (the last one shorter)."""
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size], self.labels[start : start + batch_size]


class ShuffledBatches:
    """A :class:`TrainSplit` over a :class:`TensorDataset`: each epoch a permutation drawn from ``gen``, then
    :func:`train_batches` of ``batch_size`` (the global batch: every process mixes the same one)."""

    global_batches = True

    def __init__(self, data: TensorDataset, batch_size: int, gen: torch.Generator):
        self.data, self.batch_size, self.gen = data, batch_size, gen
        self.num_classes, self.image_shape = data.num_classes, data.image_shape
        self.epoch: int | None = None  # the epoch whose order is held, until its last batch is out
        self.order: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data[index]

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        return self.data.eval_batches(batch_size)

    def batches(self, epoch: int, start: int) -> Iterator[Batch]:
        """A new epoch (``start=0``) draws its order; a resumed one continues the order it was saved with."""
        if start == 0:
            self.epoch, self.order = epoch, torch.randperm(len(self), generator=self.gen)
        elif self.epoch != epoch or self.order is None:
            raise RuntimeError(f"cannot continue epoch {epoch + 1} at batch {start}: its order was not restored")
        yield from train_batches(self.data, self.batch_size, self.gen, self.order, start)
        self.epoch, self.order = None, None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "order": self.order} if self.order is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.order = state.get("epoch"), state.get("order")

    def close(self) -> None:
        """Nothing to release: the batches are slices of a tensor."""


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
) -> Iterator[Batch]:
    """One epoch of full batches in ``order`` (drawn from ``gen`` when not given), from batch ``start`` on.

    The last partial batch is dropped, so mixing always pairs. Augmentation: random crop after ``pad`` pixels of
    padding with the background value, and a horizontal flip with probability 0.5, vectorised over the batch;
    all randomness comes from ``gen``, drawn batch by batch.
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
