"""Feeding a device from class folders: seeded per-image augmentation, workers for the whole run, uint8 batches
finished on the device.

Three choices keep a GPU fed without giving up exact resumes:

* **Each image's augmentation is seeded by ``(seed, epoch, image)``** (:class:`SeededImages`). Which worker decodes
  an image, how many workers there are and where an epoch was resumed no longer matter: a run resumed mid-epoch
  sees the same crops as an uninterrupted one, and ``num_workers`` (by default the allocation's CPUs) changes no
  result.
* **Workers live for the whole run**: one ``DataLoader`` iterator reads every epoch (:class:`EpochKeys`), so an
  epoch does not start by forking and warming up its workers again, and they load the next epoch's first batches
  while the trainer validates; each worker keeps ``prefetch_factor`` batches ready.
* **Batches travel as uint8** in pinned memory, a quarter of the bytes of float32, and are normalised (and randomly
  erased, which needs normalised pixels) on the device by :class:`DeviceFinish`, timm's prefetcher idea. The copy
  is asynchronous; a side stream would overlap it with compute, but at 1-2 ms per ImageNet batch against a step
  of a hundred it is not worth its complexity.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from transmix.data.split import Batch

AUTO_WORKERS = -1  # num_workers: the CPUs of this process's allocation (its affinity), shared by the node's processes


def allocated_cpus() -> int:
    """The CPUs this process may run on (its affinity: a SLURM allocation's, not the node's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """``requested``, or for :data:`AUTO_WORKERS` the CPUs this process may run on, divided among the processes of
    its node (``torchrun``'s ``LOCAL_WORLD_SIZE``), one left for the trainer itself."""
    if requested != AUTO_WORKERS:
        return requested
    return max(0, allocated_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1)


def stream_seed(*key: int) -> int:
    """A 64-bit seed for the random stream named by ``key`` (non-negative integers): distinct keys, unrelated
    streams. Image ``i``'s augmentation in ``epoch`` of a run seeded ``seed`` is ``(seed, epoch, i)``; the
    device-side erasing of batch ``b`` on process ``rank`` is ``(seed, epoch, rank, b)``."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0])


class seeded_rngs:  # noqa: N801 - used as a context manager, like torch.random.fork_rng
    """Python's, NumPy's and torch's global RNGs seeded with ``seed`` inside the block (what timm's and
    torchvision's transforms draw from). In the trainer process (``num_workers=0``) their states are put back
    after the block, so the trainer's own draws (stochastic depth, random erasing) do not depend on the data."""

    def __init__(self, seed: int):
        self.seed = seed
        self.saved: tuple[Any, Any, torch.Tensor] | None = None

    def __enter__(self) -> None:
        if get_worker_info() is None:
            self.saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.default_generator.manual_seed(self.seed)  # the CPU's only: a trainer's CUDA streams stay as they are

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            python, numpy, torch_state = self.saved
            random.setstate(python)
            np.random.set_state(numpy)
            torch.set_rng_state(torch_state)


class SeededImages(Dataset):
    """``dataset``'s items keyed ``(index, epoch)``: image ``index`` augmented under the seed
    ``stream_seed(seed, epoch, index)``."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        with seeded_rngs(stream_seed(self.seed, epoch, index)):
            return self.dataset[index]


class EpochKeys(Sampler):
    """The keys ``(index, epoch)`` of every epoch from batch ``start`` of ``epoch`` on, without end:
    ``indices(epoch, start)`` gives an epoch's indices (whole batches only), so batches never straddle epochs.

    One ``DataLoader`` iterator over these keys serves the whole run: its workers start once, and they load the
    next epoch's first batches while the trainer validates.
    """

    def __init__(self, indices: Callable[[int, int], Sequence[int]], epoch: int, start: int):
        self.indices, self.epoch, self.start = indices, epoch, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        while True:
            yield from ((index, epoch) for index in self.indices(epoch, start))
            epoch, start = epoch + 1, 0


class DeviceFinish:
    """uint8 batches ``(B, C, H, W)`` in [0, 255] to normalised float32 on ``device``, then random erasing there.

    Random erasing draws its boxes from Python's global RNG (timm's :class:`RandomErasing`); that RNG is seeded
    per batch from ``(seed, epoch, batch, rank)`` and put back, so a resume repeats the boxes. The erased pixels
    come from torch's RNG of the device, which checkpoints keep.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device, reprob: float = 0.0,
                 re_mode: str = "pixel"):  # fmt: skip
        self.device = device
        self.mean = torch.tensor([255 * m for m in mean], device=device).view(1, -1, 1, 1)
        self.std = torch.tensor([255 * s for s in std], device=device).view(1, -1, 1, 1)
        self.erase = None
        if reprob > 0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(reprob, mode=re_mode, device=str(device))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> Batch:
        images = images.to(self.device, non_blocking=True).float().sub_(self.mean).div_(self.std)
        if self.erase is not None:
            state = random.getstate()
            random.seed(seed)
            self.erase(images)
            random.setstate(state)
        return images, labels.to(self.device, non_blocking=True)
