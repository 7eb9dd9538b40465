"""Fashion-MNIST preparation and batching on the real files."""

from __future__ import annotations

import shutil

import pytest
import torch

from transmix.data import DatasetMissing
from transmix.data.fashion_mnist import load_fashion_mnist, train_batches
from transmix.data.prepare import DEBIAN_DIR, FILES, is_prepared, prepare_fashion_mnist


def test_prepare_from_a_source_folder(tmp_path) -> None:
    source = tmp_path / "gz"
    source.mkdir()
    for name in FILES:
        shutil.copy(DEBIAN_DIR / f"{name}.gz", source)
    prepare_fashion_mnist(tmp_path / "root", source=source, download=False)
    assert is_prepared(tmp_path / "root")
    test = load_fashion_mnist(tmp_path / "root", train=False)
    assert test.images.shape == (10000, 1, 28, 28) and test.labels.unique().tolist() == list(range(10))
    assert abs(float(load_fashion_mnist(tmp_path / "root", train=True).images.mean())) < 0.01  # normalised


def test_missing_dataset_names_both_ways(tmp_path) -> None:
    with pytest.raises(DatasetMissing, match="does not hold the four Fashion-MNIST files"):
        prepare_fashion_mnist(tmp_path / "root", source=tmp_path, download=False)
    with pytest.raises(DatasetMissing, match="transmix data"):
        load_fashion_mnist(tmp_path / "nowhere", train=True)


def test_batches_are_reproducible_full_and_augmented(fashion_root) -> None:
    data = load_fashion_mnist(fashion_root, train=False).head(300)
    first = list(train_batches(data, 64, torch.Generator().manual_seed(0)))
    again = list(train_batches(data, 64, torch.Generator().manual_seed(0)))
    assert len(first) == 4 and all(x.shape == (64, 1, 28, 28) for x, _ in first)  # 300 // 64, last dropped
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    plain = list(train_batches(data, 64, torch.Generator().manual_seed(0), augment=False))
    assert not torch.equal(first[0][0], plain[0][0]), "crop/flip changed the images"
    assert torch.equal(first[0][1], plain[0][1]), "same order of samples with and without augmentation"
