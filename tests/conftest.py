"""Shared fixtures. Fashion-MNIST comes from Debian's package (installed by .ci/run) and is unpacked once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transmix.data import DatasetMissing, prepare_fashion_mnist

    root = tmp_path_factory.mktemp("data")
    try:
        prepare_fashion_mnist(root, download=False)
    except DatasetMissing as err:
        pytest.fail(f"tests need Fashion-MNIST: {err}")
    return root


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    """A fresh copy of the pipeline (Snakefile, environment.yml, workflow/, notebooks/) with no outputs yet."""
    dest = tmp_path / "repo"
    dest.mkdir()
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, dest)
    for name in ("workflow", "notebooks"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return dest
