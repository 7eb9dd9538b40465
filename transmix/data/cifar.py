"""CIFAR-10 and CIFAR-100 as class folders, so that they train through the class-folder path like ImageNet.

The one published small-scale TransMix comparison (OpenMixup's CIFAR-100 ViT benchmark) upsamples the 32 px images
to 224 and trains DeiT-S with the DeiT recipe: exactly the class-folder path (timm's transforms, the loader, DDP
shards). So ``transmix data --dataset cifar100`` writes ``ROOT/train/<class>/*.png`` and ``ROOT/val/<class>/*.png``
(the test split) once, from torchvision's files, and ``dataset=cifar100`` then reads that tree.

The files come from ``ROOT/<folder>`` (torchvision's layout: ``cifar-100-python/`` or ``cifar-10-batches-py/``), a
``--source`` folder holding it, or torchvision's downloader. They are read here rather than by torchvision's
``CIFAR100`` class, which accepts only the official archives' checksums: a copy holding fewer images (the tests'
files) is in the same format, a pickled dict of ``data`` rows (3 x 32 x 32 bytes, channels first) and labels.
"""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from transmix.data.split import DatasetMissing

log = logging.getLogger(__name__)


class Layout(NamedTuple):
    folder: str  # torchvision's folder under the root
    train: tuple[str, ...]  # batch files of the training split
    test: tuple[str, ...]
    meta: str  # the file with the class names
    names: str  # their key in it
    labels: str  # the label key of a batch file


LAYOUTS = {
    "cifar10": Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                      "batches.meta", "label_names", "labels"),
    "cifar100": Layout("cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels"),
}  # fmt: skip
DONE = ".cifar-prepared"  # written last: the tree is complete
TRAIN_IMAGES = 50_000  # per epoch, both datasets (what `transmix cost` counts)


def is_prepared(root: str | Path) -> bool:
    return (Path(root) / DONE).is_file()


def prepare_cifar(name: str, root: str | Path, source: str | Path | None = None, download: bool = True) -> Path:
    """Make ``root`` hold CIFAR-``name`` as ``train/`` and ``val/`` class folders of PNGs; returns ``root``.

    The tree is written under a temporary name and renamed when complete, so an interrupted run leaves nothing a
    training could mistake for the dataset.

    Raises:
        DatasetMissing: the files are in none of the places, saying how to get them.
    """
    layout, root = LAYOUTS[name], Path(root)
    if is_prepared(root):
        return root
    files = _find(layout, root, source, download)
    names = [n.decode() if isinstance(n, bytes) else n for n in _unpickle(files / layout.meta)[layout.names]]
    building = root / ".building"
    shutil.rmtree(building, ignore_errors=True)
    for split, batches in (("train", layout.train), ("val", layout.test)):
        for batch in batches:
            _write_images(_unpickle(files / batch), layout.labels, names, building / split, batch)
    for split in ("train", "val"):
        shutil.rmtree(root / split, ignore_errors=True)
        (building / split).rename(root / split)
    building.rmdir()
    (root / DONE).write_text(f"{name} from {files}\n")
    log.info("%s written as class folders under %s", name, root)
    return root


def _find(layout: Layout, root: Path, source: str | Path | None, download: bool) -> Path:
    for base in [Path(source)] if source is not None else [root]:
        if all((base / layout.folder / f).is_file() for f in (layout.meta, *layout.train, *layout.test)):
            return base / layout.folder
    if source is not None:
        raise DatasetMissing(f"{source} holds no {layout.folder}/ with {', '.join((layout.meta, *layout.train))}")
    reason = ""
    if download:
        try:
            from torchvision import datasets

            kind = datasets.CIFAR100 if layout.folder.startswith("cifar-100") else datasets.CIFAR10
            kind(str(root), train=True, download=True)
            return root / layout.folder
        except Exception as err:  # noqa: BLE001 - any network failure ends in the same advice
            reason = f" (download failed: {err})"
    raise DatasetMissing(
        f"{root / layout.folder} is missing{reason}. Get it either way:\n"
        f"  1. offline: put torchvision's {layout.folder}/ folder (from the dataset's python archive) in {root}, or "
        "name the folder holding it with --source DIR\n"
        f"  2. online: transmix data --dataset {'cifar100' if '100' in layout.folder else 'cifar10'} --root {root}  "
        "(torchvision downloads it)"
    )


def _unpickle(path: Path) -> dict:
    with path.open("rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _write_images(batch: dict, labels_key: str, names: list[str], out: Path, prefix: str) -> None:
    from PIL import Image

    pixels = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    for index, (image, label) in enumerate(zip(pixels, batch[labels_key], strict=True)):
        folder = out / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "RGB").save(folder / f"{prefix}_{index:05d}.png")
