"""Shared fixtures. Fashion-MNIST comes from Debian's package (installed by .ci/run) and is unpacked once."""

from __future__ import annotations

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
