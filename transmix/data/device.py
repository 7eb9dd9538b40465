"""The device input path (``loader: device``): workers only read files; the run's device decodes and augments.

With ``loader: pil`` every training image is decoded by PIL and RandAugmented by timm in a CPU worker, about 150
images/s per CPU (the GPU check on an H200): a compiled DeiT-S step eats about 8,500 images/s, so a GPU node with 16
CPUs per GPU waits for its data most of the time. Here a worker does what is cheap on a CPU and the device does the
rest:

* **Workers** read each file's bytes, take its size from the header, and draw its augmentation from
  ``(seed, epoch, image)`` exactly as the PIL path's timm transform would (:mod:`transmix.data.draws`): the crop
  box, resize filter, flips and RandAugment's ops and magnitudes.
* **The device** decodes the batch's JPEGs in one call (torchvision's ``decode_jpeg``: nvJPEG on a GPU, libjpeg-turbo
  on a CPU; other formats are decoded on the host and moved), then crops, resizes, flips and runs RandAugment
  grouped by op (:mod:`transmix.data.tensor_aug`). Normalisation and random erasing are the PIL path's own
  (:class:`transmix.data.loader.DeviceFinish`).
* **One batch ahead**: a thread prepares the next batch (on a CUDA stream of its own on a GPU) while the trainer
  queues the current step, so decoding overlaps the step rather than adding to it.

The same code runs on a CPU, where the tests compare it with the PIL path: identical parameters, pixels within
stated tolerances (nvJPEG against libjpeg, torch's resampling against PIL's). torchvision and not NVIDIA DALI: the
CUDA wheels of torchvision that timm already installs carry nvJPEG, so the path needs no extra package and the same
torch ops run in CI; DALI's RandAugment has its own op set and magnitude scale, not timm's. TorchCodec, which
torchvision 0.29 names as its decoders' successor, decodes JPEG on CUDA only in the builds of PyTorch's own index,
which a lock of PyPI packages cannot hold; :func:`decode` is the one place to change when that moves.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from transmix.data.draws import Draw, check_supported, draw
from transmix.data.imagefolder import ImageFolderSplit, Samples
from transmix.data.loader import DeviceFinish, stream_seed
from transmix.data.split import CorruptImage

# Failures of the device, not of a file: they stop the run as they are instead of naming a file as corrupt.
NOT_THE_FILE = (torch.OutOfMemoryError, *((torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()))

JPEG_MAGIC = b"\xff\xd8\xff"
# A batch from the workers: every file's bytes in one tensor, where each file ends, labels, draws and paths. One
# tensor crosses from a worker process once; a list of them would cross as one shared-memory handle per image.
Encoded = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[Draw], list[str]]
# torchvision 0.29 marks its decoders deprecated (see above); said once per process here, not per batch. A filter set
# at import, not warnings.catch_warnings, which swaps the process-wide filters and is not safe in a thread.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated")


class EncodedImages(Dataset):
    """Key ``(index, epoch)`` -> image ``index``'s file bytes, label, drawn augmentation and path."""

    def __init__(self, samples: Samples, transform: Callable[[Image.Image], Any], seed: int):
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, Draw, str]:
        index, epoch = key
        path, label = self.samples[index]
        try:
            data = Path(path).read_bytes()  # the file is read once: its header (below) and bytes come from here
            with Image.open(io.BytesIO(data)) as img:  # the header only: the size the crop box is drawn for
                size = img.size
        except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
            raise CorruptImage(f"{path}: {type(err).__name__}: {err}") from None
        augmentation = draw(self.transform, size, stream_seed(self.seed, epoch, index))
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), label, augmentation, path


def collate(items: list[tuple[torch.Tensor, int, Draw, str]]) -> Encoded:
    """A batch's files as one byte tensor and where each ends (they differ in size until decoded and cropped)."""
    data, labels, draws, paths = zip(*items, strict=True)
    ends = torch.tensor([len(d) for d in data]).cumsum(0)
    return torch.cat(data), ends, torch.tensor(labels), list(draws), list(paths)


def split_files(flat: torch.Tensor, ends: torch.Tensor) -> list[torch.Tensor]:
    """:func:`collate`'s byte tensor back into one view per file."""
    starts = [0, *ends[:-1].tolist()]
    return [flat[a:b] for a, b in zip(starts, ends.tolist(), strict=True)]


def decode(data: list[torch.Tensor], paths: list[str], device: torch.device) -> list[torch.Tensor]:
    """Each image as uint8 RGB ``(3, H, W)`` on ``device``: the JPEGs in one call (nvJPEG's batched decoder on a
    GPU), any other format decoded on the host and moved.

    When the batched call fails, each JPEG is decoded alone, on the device and else on the host: nvJPEG refuses some
    files that libjpeg reads (ImageNet's training set holds a few CMYK JPEGs), and one of them must not stop a run.

    Raises:
        CorruptImage: one line per file that decodes nowhere, with its path.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    jpeg = [i for i, d in enumerate(data) if bytes(d[:3].tolist()) == JPEG_MAGIC]
    out: list[torch.Tensor | None] = [None] * len(data)
    try:
        if jpeg:
            _settled(device)
            for i, img in zip(jpeg, decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device),
                              strict=True):  # fmt: skip
                out[i] = img
    except NOT_THE_FILE:
        raise
    except RuntimeError:
        out = [None] * len(data)
    errors = []
    for i in (i for i in range(len(data)) if out[i] is None):
        try:
            out[i] = _decode_one(data[i], device, i in jpeg)
        except NOT_THE_FILE:
            raise
        except RuntimeError as err:
            errors.append(f"{paths[i]}: {str(err).splitlines()[0]}")
    if errors:
        raise CorruptImage("; ".join(errors))
    return out  # type: ignore[return-value]


def _settled(device: torch.device) -> None:
    """Wait for the work already queued on this thread's stream before nvJPEG decodes: torchvision allocates the
    output on this stream but decodes on a stream of its own that does not wait for it, so memory the previous
    batch's augmentation still reads could be handed to the decoder and overwritten (pytorch/vision#9606)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def _decode_one(data: torch.Tensor, device: torch.device, jpeg: bool) -> torch.Tensor:
    """One image on ``device``: a JPEG decoded there if it can be, else (and any other format) on the host."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    if jpeg and device.type != "cpu":
        try:
            _settled(device)
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except NOT_THE_FILE:
            raise
        except RuntimeError:
            pass
    return decode_image(data, mode=ImageReadMode.RGB).to(device, non_blocking=True)


def augmented(batch: Encoded, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One loader batch decoded on ``device`` and augmented there: uint8 ``(B, 3, size, size)`` and the labels."""
    from transmix.data.tensor_aug import augment

    flat, ends, labels, draws, paths = batch
    images = decode(split_files(flat, ends), paths, device)
    for img, d, path in zip(images, draws, paths, strict=True):
        top, left, height, width = d.crop
        if top + height > img.shape[1] or left + width > img.shape[2]:
            raise CorruptImage(f"{path}: decoded as {img.shape[2]}x{img.shape[1]}, smaller than its header says")
    return augment(images, draws, size), labels


class Ahead:
    """Batches of ``make(item)`` for each item of ``items``, the next one made by a thread while the current is used.

    On a GPU the thread works on a CUDA stream of its own; the trainer's stream waits for a batch's event before
    using it, and the tensors are marked as used there so that the allocator does not reuse them early.
    """

    def __init__(self, items: Iterator[Any], make: Callable[[Any], tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device):  # fmt: skip
        self.items, self.make, self.device = items, make, device
        # A new thread's current CUDA device is 0: set it, or every process but rank 0 opens a context on GPU 0.
        initializer = (lambda: torch.cuda.set_device(device)) if device.type == "cuda" else None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transmix-device-input",
                                       initializer=initializer)  # fmt: skip
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.next: Future | None = None

    def _made(self, item: Any) -> tuple[tuple[torch.Tensor, torch.Tensor], Any]:
        context = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with context:
            out = self.make(item)
            event = self.stream.record_event() if self.stream is not None else None
        return out, event

    def _submit(self) -> None:
        item = next(self.items, None)
        self.next = None if item is None else self.pool.submit(self._made, item)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.next is None:
            self._submit()
        if self.next is None:
            self.pool.shutdown(wait=False)
            raise StopIteration
        (images, labels), event = self.next.result()
        self._submit()  # the thread starts on the next batch now
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            images.record_stream(current)
        return images, labels

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.next = self.items = None  # a failed batch's traceback would keep the loader's workers alive


class DeviceImageFolderSplit(ImageFolderSplit):
    """:class:`ImageFolderSplit` with ``loader: device``: the same order, keys and parameters, decoded and augmented
    on the device (see the module docstring)."""

    def __init__(self, samples: Samples, transform: Callable[[Image.Image], torch.Tensor], num_classes: int,
                 img_size: int, batch_size: int = 0, part: tuple[int, int] = (0, 1), seed: int = 0,
                 num_workers: int = 0, finish: DeviceFinish | None = None):  # fmt: skip
        check_supported(transform)
        super().__init__(samples, transform, num_classes, img_size, batch_size, part, seed, num_workers, finish)
        self._ahead: Ahead | None = None

    collate = staticmethod(collate)

    def keyed_images(self) -> Dataset:
        return EncodedImages(self.samples, self.transform, self.seed)

    def prepared(self, batches: Iterator[Encoded]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.finish.device
        self._ahead = Ahead(batches, partial(augmented, size=self.image_shape[-1], device=device), device)
        return self._ahead

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
        super().close()
