"""Class-folder trees of generated images, for checks that must run where no dataset is (a fresh GPU machine).

Each class is a learnable pattern: stripes of its own orientation and colour under per-image noise, position and
phase, so a model's loss falls within a few hundred steps, at any image size, with nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from transmix.data.split import SPLITS


def make_class_folders(root: str | Path, classes: int = 4, per_class: tuple[int, int] = (64, 16),
                       size: int | tuple[int, int] = 32, seed: int = 0, suffix: str = ".png") -> Path:  # fmt: skip
    """``root/train/class{k}/*`` and ``root/val/class{k}/*``: ``per_class`` images (train, val) per class of
    ``size`` pixels (a side, or width and height), written as ``suffix`` (.png, or .jpg at PIL's default quality);
    returns ``root``."""
    rng = np.random.default_rng(seed)
    width, height = (size, size) if isinstance(size, int) else size
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    for split, count in zip(SPLITS, per_class, strict=True):
        for k in range(classes):
            folder = Path(root) / split / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            angle, colour = np.pi * k / classes, np.eye(3)[k % 3] * 0.6 + 0.2
            for i in range(count):
                phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(3, 5)
                wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase) > 0
                pixels = wave[..., None] * colour + rng.normal(0, 0.15, (height, width, 3))
                Image.fromarray((pixels.clip(0, 1) * 255).astype(np.uint8), "RGB").save(folder / f"{i:04d}{suffix}")
    return Path(root)
