"""Work-arounds for library behaviour that would otherwise lose a run, each kept to the one place it applies.

* :func:`pillow_safe`: Pillow 13 refuses to posterize to 0 bits, which the paper's RandAugment policy asks for in
  about 2% of draws; unpatched, an ImageNet run dies within its first batches.
* :func:`worker_init`: SLURM signals every process of a job, ``DataLoader`` workers included; a worker killed by
  SIGTERM makes torch raise in the trainer before it can write its preemption checkpoint.
* :func:`naming_corrupt`: torch re-raises a worker's exception wrapped in the worker's traceback, burying the
  name of the file that did not decode.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from PIL import Image

from transmix.data.split import Batch, CorruptImage

SIGTERM_GRACE_S = 30  # SLURM's default KillWait: the time between its SIGTERM and its SIGKILL


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs: object) -> Image.Image:
    """timm's ``posterize``, with 0 bits kept giving the black image Pillow used to return for it.

    RandAugment's ``PosterizeIncreasing`` keeps ``4 - int(4 * m / 10)`` bits, so 0 once the magnitude, drawn
    around 9 with std 0.5 by ``rand-m9-mstd0.5``, reaches its cap of 10 (about 2% of draws). Pillow 13 raises
    ``ValueError`` for 0 bits where earlier versions masked every bit.
    """
    from timm.data.auto_augment import posterize

    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep, **kwargs)


def pillow_safe(transform: Callable[[Image.Image], Any]) -> Callable[[Image.Image], Any]:
    """Point the posterize ops of timm's auto-augment inside ``transform`` at :func:`_posterize` (this transform
    only; timm itself is not patched)."""
    for step in getattr(transform, "transforms", ()):
        ops = list(getattr(step, "ops", ())) + [op for sub in getattr(step, "policy", ()) for op in sub]
        for op in ops:
            if "Posterize" in getattr(op, "name", ""):
                op.aug_fn = _posterize
    return transform


def worker_init(worker_id: int) -> None:
    """Loader workers outlive a SIGTERM by :data:`SIGTERM_GRACE_S` seconds, then exit cleanly.

    A worker that waits keeps serving batches while the trainer saves at its step boundary, and its exit status 0
    raises nothing. It does not ignore the signal for good: multiprocessing terminates leftover workers with
    SIGTERM at exit and waits for them.
    """
    del worker_id
    signal.signal(signal.SIGALRM, lambda *_: os._exit(0))
    signal.signal(signal.SIGTERM, lambda *_: signal.alarm(SIGTERM_GRACE_S))


def naming_corrupt(loader: Iterable[Batch]) -> Iterator[Batch]:
    """The loader's batches; a :class:`CorruptImage` raised in a worker comes back with its one-line message."""
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
