"""Fashion-MNIST's files where torchvision reads them: from Debian's package, a folder, or the internet.

The embedded default study must run offline, so the first source is Debian's ``dataset-fashion-mnist`` package;
a folder of the four ``*-ubyte.gz`` files a user names comes before it, torchvision's downloader after it. Reading
is torchvision's ``FashionMNIST`` (:mod:`transmix.data.fashion_mnist`); this module only puts the files where it
looks, and imports no torch unless it downloads.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

from transmix.data.split import DatasetMissing
from transmix.records.atomic import atomic_open

TRAIN_IMAGES = 60_000  # Fashion-MNIST's training split: what train_subset = 0 trains on (`transmix cost` counts it)

log = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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
    folder = Path(source) if source is not None else DEBIAN_DIR
    if all((folder / f"{name}.gz").is_file() for name in FILES):
        raw.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            with atomic_open(raw / name, "wb") as out, gzip.open(folder / f"{name}.gz", "rb") as inp:
                shutil.copyfileobj(inp, out)
        log.info("Fashion-MNIST unpacked from %s into %s", folder, raw)
        return raw
    if source is not None:
        raise DatasetMissing(f"{folder} does not hold the four Fashion-MNIST files {[f + '.gz' for f in FILES]}")
    reason = ""
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
            return raw
        except Exception as err:  # noqa: BLE001 - any network failure ends in the same advice
            reason = f" (download failed: {err})"
    raise DatasetMissing(
        f"Fashion-MNIST is not in {raw}{reason}. Get it either way:\n"
        "  1. offline, Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (then rerun)\n"
        "  2. online: transmix data --root " + str(root) + "  (torchvision downloads it)\n"
        "or point at a folder holding the four *-ubyte.gz files: transmix data --source DIR"
    )
