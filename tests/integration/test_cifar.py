"""CIFAR-100 for real, at toy size: files in torchvision's format on disk, written as class folders, trained on."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from transmix.cli import main
from transmix.config.run import from_dict
from transmix.data import DatasetMissing, class_names, eval_split
from transmix.data.cifar import DONE
from transmix.training.checkpoint import FINAL
from transmix.training.train import train

pytestmark = pytest.mark.slow  # trains
NAMES = [f"class_{k:02d}" for k in range(100)]  # CIFAR-100's file names its 100 classes; the toy set uses four


def write_cifar100(root, train: int = 48, test: int = 16) -> None:
    """``root/cifar-100-python/{train,test,meta}`` as the official archive holds them (pickles of byte keys)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, count in (("train", train), ("test", test)):
        labels = [k % 4 for k in range(count)]
        pixels = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        pixels[:, 0] = np.asarray(labels, dtype=np.uint8)[:, None, None] * 60  # a class shows in the red channel
        batch = {b"data": pixels.reshape(count, 3072), b"fine_labels": labels, b"coarse_labels": [0] * count}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [n.encode() for n in NAMES]}))


def test_cifar100_is_written_as_class_folders_and_trains(tmp_path, capsys) -> None:
    root = tmp_path / "cifar100"
    assert main(["data", "--dataset", "cifar100", "--root", str(root), "--no-download"]) == 1
    err = capsys.readouterr().err
    assert "cifar-100-python" in err and "--source DIR" in err and "torchvision downloads it" in err  # both ways
    cfg = from_dict(dict(dataset="cifar100", data_dir=str(root), model="vit_micro_patch4_28", img_size=32, epochs=1,
                         batch_size=8, warmup_epochs=0, method="transmix", device="cpu", num_workers=0))  # fmt: skip
    with pytest.raises(DatasetMissing, match="transmix data --dataset cifar100 --root"):
        train(cfg, tmp_path / "early", progress=False)

    write_cifar100(root)
    assert main(["data", "--dataset", "cifar100", "--root", str(root), "--no-download"]) == 0
    assert (root / DONE).is_file() and not (root / ".building").exists()
    counts = {split: sorted(len(list(d.iterdir())) for d in (root / split).iterdir()) for split in ("train", "val")}
    assert counts == {"train": [12] * 4, "val": [4] * 4}
    assert class_names(cfg) == NAMES[:4]
    test = eval_split(cfg, images=0)
    assert len(test) == 16 and test[0][0].shape == (3, 32, 32)

    out = train(cfg, tmp_path / "run", progress=False)
    assert out.name == FINAL and out.exists()
    again = main(["data", "--dataset", "cifar100", "--root", str(root), "--no-download"])  # prepared: a no-op
    assert again == 0 and "ready as class folders" in capsys.readouterr().out
