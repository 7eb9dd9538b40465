"""The run's test images that the suites perturb, in memory, and how the run reads image files of its own.

Both scales hold 8-bit pixels (Fashion-MNIST's; an imagefolder image is resized and cropped by PIL in 8 bits before
it becomes a tensor), so the normalised tensors convert back to exact pixels (:meth:`EvalImages.pixels`), which is
where occlusion, attacks and corruptions work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transmix.config.robustness import IMAGE_COUNTS, Protocol
from transmix.config.run import TrainConfig
from transmix.data import Batch
from transmix.data.fashion_mnist import MEAN, STD, TensorDataset, load_fashion_mnist
from transmix.data.imagefolder import (
    ImageFiles,
    Samples,
    eval_transform,
    image_folder_classes,
    list_images,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileReader:
    """How an imagefolder run reads image files: its class map (folder name -> label) and evaluation transform."""

    classes: dict[str, int]
    transform: Callable[[Any], torch.Tensor]
    workers: int = 0

    def batches(self, samples: Samples, batch: int) -> Iterator[Batch]:
        """``(images, labels)`` batches of ``samples`` (``(path, label)`` pairs), in order; ``workers`` processes."""
        return ImageFiles(samples, self.transform, self.workers).eval_batches(batch)


@dataclass(frozen=True)
class EvalImages(TensorDataset):
    """A :class:`TensorDataset` of the run's test images, normalised per channel with ``mean``/``std`` as its model
    expects. ``files`` is how the run reads an image file (imagefolder runs; ``None`` for Fashion-MNIST), for the
    suites that read folders of their own."""

    mean: tuple[float, ...] = (MEAN,)
    std: tuple[float, ...] = (STD,)
    files: FileReader | None = None

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.mean).view(-1, 1, 1), torch.tensor(self.std).view(-1, 1, 1)

    def pixels(self, images: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised images (default: all) -> 8-bit pixel values ``(N, C, H, W)`` uint8; :meth:`normalise` gives
        back the loaded tensor up to float rounding."""
        mean, std = self._stats()
        x = self.images if images is None else images
        return torch.round((x * std + mean) * 255.0).clamp(0, 255).to(torch.uint8)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """8-bit pixels (uint8) or pixel values in [0, 1] (float) -> the model's input, as the data loader does it."""
        mean, std = self._stats()
        x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels
        return (x - mean.to(x.device)) / std.to(x.device)

    @property
    def background(self) -> torch.Tensor:
        """A black pixel, normalised, ``(C, 1, 1)``: Fashion-MNIST's background, and the occluder of images."""
        mean, std = self._stats()
        return -mean / std


def load_images(cfg: TrainConfig, protocol: Protocol, suites: Iterable[str]) -> EvalImages:
    """The run's test images for ``suites``: the Fashion-MNIST test split, or an imagefolder run's ``val/`` in a
    random order drawn from ``protocol.seed``, as many images as the largest subset asked for."""
    if cfg.dataset == "fashion_mnist":
        data = load_fashion_mnist(cfg.data_dir, train=False)
        return EvalImages(data.images, data.labels, data.num_classes)
    classes = image_folder_classes(cfg.data_dir)
    files = FileReader(classes, eval_transform(cfg), cfg.num_workers)
    samples, _ = list_images(Path(cfg.data_dir) / "val", classes)
    counts = [getattr(protocol, IMAGE_COUNTS[s]) for s in suites if s in IMAGE_COUNTS]
    count = 0 if 0 in counts else max(counts, default=-1)  # -1: no suite perturbs val/ images
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(protocol.seed))
    picked = [samples[i] for i in order[: len(samples) if count == 0 else max(count, 0)].tolist()]
    log.info("reading %d of %d val/ images", len(picked), len(samples))
    batches = [(torch.empty(0, 3, cfg.img_size, cfg.img_size), torch.empty(0, dtype=torch.long))]  # none picked
    batches += list(files.batches(picked, protocol.batch_size))
    images, labels = (torch.cat(part) for part in zip(*batches, strict=True))
    return EvalImages(images, labels, len(classes), cfg.mean, cfg.std, files)
