"""The two interfaces every dataset answers, and the two errors data can raise: a module of its own, so that the
datasets import it without importing the package that picks among them (no import circle). No torch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from transmix.errors import Failure

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val")  # the sub-folders of a class-folder tree
Batch = tuple["torch.Tensor", "torch.Tensor"]  # images (B, C, H, W) float32 normalised, labels (B,) int64


class DatasetMissing(Failure, FileNotFoundError):
    """The dataset is not where the config says; the message says how to get it."""


class CorruptImage(Failure, ValueError):
    """An image does not decode; the message names every such file and its error."""


class Split(Protocol):
    """A fixed set of labelled images, read in order (a test or validation split)."""

    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W) of one model input

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        """One normalised image ``(C, H, W)`` and its label."""
        ...

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """Every image in order, in batches of ``batch_size`` (the last one shorter)."""
        ...


class TrainSplit(Split, Protocol):
    """A training split: each epoch's batches in the run's order, resumable from any batch.

    ``global_batches``: every process gets the same global batch and trains on its slice (in memory), or each
    process gets its own local batch (class folders, one shard per process).
    """

    global_batches: bool

    def batches(self, epoch: int, start: int) -> Iterator[Batch]:
        """Epoch ``epoch``'s full batches from batch ``start`` on."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a mid-epoch checkpoint must keep to replay the rest of the epoch."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Release what loads the batches (worker processes), at the end of training."""
        ...
