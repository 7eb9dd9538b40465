"""ImageNet-C corruptions (imagecorruptions) on 8-bit images, spread over worker processes.

The library corrupts one image at a time on one core (glass_blur: about 3 s per 224 px image), so the images are
shared among spawned worker processes. Workers import this module only, and it imports no torch or timm at its
top, so that they start fast; the suite itself (:func:`corruption`) imports torch when it runs, in the parent.
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transmix.robustness.context import Context, Rows

CORRUPTION_SIZE = 32  # imagecorruptions refuses images smaller than 32x32


def corrupt_images(pixels: np.ndarray, name: str, severity: int, seeds: Sequence[int]) -> np.ndarray:
    """``imagecorruptions.corrupt`` on 8-bit images, grey ``(N, H, W)`` or RGB ``(N, H, W, 3)``, one seed per
    image; same shape, uint8.

    The library needs at least 32x32: a smaller image is padded with black (Fashion-MNIST's background) to 32x32,
    centred, corrupted, and cropped back. The library makes grey images RGB; the first channel is kept, which
    leaves a noise corruption's per-pixel strength as the library sets it (a mean of three independently noised
    channels would cut noise by sqrt(3); frost's coloured overlay is seen through its red channel). The library
    draws from NumPy's global RNG, which is seeded per image with that image's seed (also passed as ``seed`` to the
    corruptions that take one, impulse_noise and glass_blur, which otherwise draw unseeded), and NumPy's global
    state is put back afterwards.
    """
    from imagecorruptions import corrupt, corruption_dict

    takes_seed = "seed" in inspect.signature(corruption_dict[name]).parameters
    n, height, width = pixels.shape[:3]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images: give one seed per image")
    top, left = max((CORRUPTION_SIZE - height) // 2, 0), max((CORRUPTION_SIZE - width) // 2, 0)
    pad = [(top, max(CORRUPTION_SIZE - height - top, 0)), (left, max(CORRUPTION_SIZE - width - left, 0))]
    pad += [(0, 0)] * (pixels.ndim - 3)
    out = np.empty_like(pixels)
    state = np.random.get_state()
    try:
        for i, seed in enumerate(seeds):
            np.random.seed(seed)
            extra = {"seed": seed} if takes_seed else {}
            image = corrupt(np.pad(pixels[i], pad), severity=severity, corruption_name=name, **extra)
            image = image[top : top + height, left : left + width]
            out[i] = image[..., 0] if pixels.ndim == 3 else image
    finally:
        np.random.set_state(state)
    return out


@contextlib.contextmanager
def corruption_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """``workers`` processes for :func:`corrupt_many` (started fresh, not forked from a process running torch's
    thread pool), or ``None`` for one worker: the calling process does the work."""
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def corrupt_many(pool: ProcessPoolExecutor | None, workers: int, pixels: np.ndarray, name: str, severity: int,
                 seeds: Sequence[int]) -> np.ndarray:  # fmt: skip
    """:func:`corrupt_images` with the images split in order among the pool's ``workers``; the same result."""
    if pool is None or len(seeds) < 2:
        return corrupt_images(pixels, name, severity, seeds)
    chunks = [c for c in np.array_split(np.arange(len(seeds)), workers) if len(c)]
    parts = pool.map(corrupt_images, [pixels[c] for c in chunks], [name] * len(chunks), [severity] * len(chunks),
                     [[seeds[i] for i in c] for c in chunks])  # fmt: skip
    return np.concatenate(list(parts))


def corruption(ctx: Context) -> Rows:
    """Top-1 on corrupted images, per corruption and severity; ``setting`` = corruption, ``level`` = severity.

    The images are shared among ``torch.get_num_threads()`` worker processes (``--threads``); each image's own seed
    makes the result the same for any number of workers.
    """
    import torch

    protocol, test = ctx.protocol, ctx.data.head(ctx.protocol.corruption_images)
    pixels = test.pixels().permute(0, 2, 3, 1).numpy()  # (N, H, W, C) uint8
    grey = pixels.shape[-1] == 1
    workers = max(1, min(torch.get_num_threads(), len(test)))
    out: Rows = []
    with corruption_pool(workers) as pool:
        for name in protocol.corruption_names:
            for severity in protocol.corruption_severities:
                seeds = torch.randint(0, 2**32 - 1, (len(test),), generator=ctx.gen).tolist()
                corrupted = corrupt_many(pool, workers, pixels[..., 0] if grey else pixels, name, severity, seeds)
                corrupted = torch.from_numpy(corrupted)
                images = test.normalise(corrupted[:, None] if grey else corrupted.permute(0, 3, 1, 2))
                out += ctx.top1_rows(images, test.labels, "corruption", name, severity)
    return out
